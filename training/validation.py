"""Sliding-window validation on the working grid with MONAI's DiceMetric.

Prediction goes through the engine's ``segresmamba.inference.predict`` (MONAI
``sliding_window_inference`` with the same Gaussian blending and window rule as ``segment()``),
so the Dice that picks the best checkpoint is the Dice of the path users run. Cases are shared
out over the ranks and the per-case results gathered, so several GPUs validate in parallel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import DiceMetric
from torch import nn

from segresmamba.inference import predict
from segresmamba.tasks import Task

from .distributed import Distributed, gather
from .losses import labelled_mask

__all__ = ["case_dice", "class_names", "validate"]


def class_names(task: Task) -> list[str]:
    """The structures Dice is reported for: foreground labels (softmax) or regions (sigmoid)."""
    return [label.abbreviation or label.name for label in task.foreground_labels]


def case_dice(
    probabilities: torch.Tensor, label: torch.Tensor, task: Task, ignore_value: int | None = None
) -> list[float]:
    """Dice of each structure for one case; NaN where the structure is absent from the truth.

    probabilities: (K, i, j, k) softmax or sigmoid output; label: (1, i, j, k) label values
    (softmax) or (K, i, j, k) region masks (sigmoid). Voxels labelled ``ignore_value`` are left
    out of both the prediction and the truth: nobody said what they are.
    """
    label = torch.as_tensor(label)
    labelled = labelled_mask(label[None], ignore_value)
    if labelled is not None:
        label = torch.where(labelled[0], label, 0)
    if task.output == "softmax":
        classes = task.out_channels
        prediction = probabilities.argmax(0, keepdim=True)
        one_hot = torch.nn.functional.one_hot
        y_pred = one_hot(prediction[0].long(), classes).permute(3, 0, 1, 2)[None]
        y = one_hot(label[0].long(), classes).permute(3, 0, 1, 2)[None]
        metric = DiceMetric(include_background=False, reduction="none", ignore_empty=True)
    else:
        y_pred = (probabilities > 0.5)[None].float()
        y = (label > 0)[None].float()
        metric = DiceMetric(include_background=True, reduction="none", ignore_empty=True)
    if labelled is not None:
        y_pred, y = y_pred * labelled, y * labelled
    return [float(v) for v in metric(y_pred.float(), y.float())[0]]


def validate(
    model: nn.Module,
    cases: Sequence[dict],
    task: Task,
    patch_size: Sequence[int],
    place: Distributed,
    overlap: float = 0.25,
    sw_batch_size: int = 1,
    ignore_value: int | None = None,
) -> dict[str, float]:
    """Mean Dice per structure over the cases (NaN-aware) and their mean, ``"mean"``.

    Every rank runs its share of ``cases`` (a preprocessed dataset) and all ranks return the
    same numbers; voxels labelled ``ignore_value`` count for nothing. The model is put back in
    training mode afterwards.
    """
    model = getattr(model, "module", model)
    mine = []
    for index in range(place.rank, len(cases), place.world_size):
        item = cases[index]
        probabilities = predict(
            item["image"],
            model,
            task.output,
            patch_size,
            place.device,
            overlap=overlap,
            sw_batch_size=sw_batch_size,
        )
        mine.append(case_dice(probabilities, item["label"], task, ignore_value))
    model.train()
    scores = np.array([s for part in gather(mine, place) for s in part], dtype=float)
    names = class_names(task)
    result = {}
    for column, name in enumerate(names):
        values = scores[:, column][~np.isnan(scores[:, column])] if len(scores) else []
        result[name] = float(np.mean(values)) if len(values) else math.nan
    present = [v for v in result.values() if not math.isnan(v)]
    result["mean"] = float(np.mean(present)) if present else math.nan
    return result

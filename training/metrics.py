"""Per-structure Dice and HD95 on the original image grid, and the paper's table layouts.

Dice and the 95th-percentile Hausdorff distance come from MONAI (``compute_dice``,
``compute_hausdorff_distance`` with the voxel spacing, so HD95 is in millimetres). The tables
follow the paper: Table 1 (BTCV, one column per organ and the mean), Table 2 (BraTS: mean, TC,
WT, ET) and Table 3 (spleen).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import SimpleITK as sitk
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance

from segresmamba.tasks import Task

__all__ = ["case_metrics", "markdown_table", "structure_masks", "summarise", "table_columns"]


def _key(label) -> str:
    """How a structure is named in results: its abbreviation (BraTS TC/WT/ET) or its name."""
    return label.abbreviation or label.name


def structure_masks(image: sitk.Image, task: Task, truth: bool) -> dict[str, np.ndarray]:
    """Boolean mask of each structure the task reports, as (z, y, x) arrays.

    Softmax tasks: one mask per foreground label value. BraTS: predictions are ``segment()``'s
    region components (TC, WT, ET); truths are labelmaps, split into regions by the task's
    rules in the 2021 convention (enhancing tumour 4) or, without any 4, the 2023 one (3).
    """
    if task.output == "softmax":
        array = sitk.GetArrayViewFromImage(image)
        return {_key(label): array == label.value for label in task.foreground_labels}
    regions = [label.abbreviation for label in task.labels]
    if not truth:
        if image.GetNumberOfComponentsPerPixel() != len(regions):
            raise ValueError(
                f"expected {len(regions)} region components, got "
                f"{image.GetNumberOfComponentsPerPixel()}"
            )
        components = [sitk.VectorIndexSelectionCast(image, i) for i in range(len(regions))]
        return {r: sitk.GetArrayFromImage(c) > 0 for r, c in zip(regions, components)}
    array = sitk.GetArrayFromImage(image)
    convention = "2021" if (array == 4).any() else "2023"
    masks = task.labelmap.to_regions(array, convention)
    return dict(zip(regions, masks))


def case_metrics(
    prediction: Mapping[str, np.ndarray],
    truth: Mapping[str, np.ndarray],
    spacing_zyx: Sequence[float],
) -> dict[str, dict[str, float]]:
    """``{structure: {"dice": ..., "hd95": ...}}``; NaN where the truth lacks the structure,
    HD95 infinite where the truth has it and the prediction does not."""
    out = {}
    for name, expected in truth.items():
        y = torch.from_numpy(np.ascontiguousarray(expected))[None, None].float()
        y_pred = torch.from_numpy(np.ascontiguousarray(prediction[name]))[None, None].float()
        dice = float(compute_dice(y_pred, y, include_background=True, ignore_empty=True)[0, 0])
        if not expected.any():
            hd95 = math.nan
        elif not prediction[name].any():
            hd95 = math.inf
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                hd95 = float(
                    compute_hausdorff_distance(
                        y_pred,
                        y,
                        include_background=True,
                        percentile=95,
                        spacing=[float(s) for s in spacing_zyx],
                    )[0, 0]
                )
        out[name] = {"dice": dice, "hd95": hd95}
    return out


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def summarise(per_case: Sequence[Mapping[str, Mapping[str, float]]], names: Sequence[str]) -> dict:
    """Mean over cases of each structure's Dice and HD95 (NaN cases left out; an infinite HD95
    makes the mean infinite, as it should), and the mean over structures."""
    summary: dict[str, dict[str, float]] = {"dice": {}, "hd95": {}}
    for name in names:
        for metric in ("dice", "hd95"):
            summary[metric][name] = _mean([case[name][metric] for case in per_case])
    for metric in ("dice", "hd95"):
        summary[metric]["mean"] = _mean([summary[metric][n] for n in names])
    return summary


def table_columns(task: Task) -> list[tuple[str, str]]:
    """(structure key, column title) in the paper's order for this task."""
    if task.name == "brats":  # Table 2: Mean Dice, Dice TC, Dice WT, Dice ET
        return [("mean", "Mean {m}")] + [(r, f"{{m}} {r}") for r in ("TC", "WT", "ET")]
    if task.name == "spleen":  # Table 3: Avg Dice
        return [("mean", "Avg {m}")]
    # Table 1 (BTCV) gives the average only; the organs are shown as well, in label order.
    return [(_key(label), label.name) for label in task.foreground_labels] + [("mean", "Avg {m}")]


def _fmt(value: float, metric: str) -> str:
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf"
    return f"{value:.4f}" if metric == "dice" else f"{value:.2f}"


def markdown_table(task: Task, summary: Mapping, model: str) -> str:
    """Dice and HD95 rows in the layout of the paper's table for this task."""
    lines = []
    for metric, title in (("dice", "Dice"), ("hd95", "HD95 (mm)")):
        columns = table_columns(task)
        header = [c.format(m=title) if "{m}" in c else c for _, c in columns]
        lines.append("| Model | " + " | ".join(header) + " |")
        lines.append("|---" * (len(columns) + 1) + "|")
        cells = [_fmt(summary[metric][key], metric) for key, _ in columns]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)

"""The demo: segment a synthetic phantom with the bundled demo model and score it against truth.

It runs the same ``segment()`` as every real task, so a passing demo shows the whole pipeline
(orientation, spacing, sliding window, labels back on an oblique grid) working on this machine.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import ModelNotAvailableError, SegResMambaError
from .phantom import DEMO_SEED, make_phantom

__all__ = ["DEMO_MODEL", "DEMO_TASK", "DemoResult", "dice_per_label", "run_demo"]

DEMO_TASK = "phantom"
DEMO_MODEL = "phantom-demo"


@dataclass
class DemoResult:
    """What the demo wrote and measured."""

    dice: dict[str, float]
    seconds: float
    device: str
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def mean_dice(self) -> float:
        values = [v for v in self.dice.values() if not np.isnan(v)]
        return float(np.mean(values)) if values else float("nan")


def dice_per_label(
    truth: sitk.Image, prediction: sitk.Image, labels: dict[int, str]
) -> dict[str, float]:
    """Dice 2|A∩B| / (|A| + |B|) per label, voxel for voxel on one grid (NaN when both empty)."""
    a = sitk.GetArrayViewFromImage(truth)
    b = sitk.GetArrayViewFromImage(prediction)
    if a.shape != b.shape:
        raise SegResMambaError(f"truth {a.shape} and prediction {b.shape} are not on one grid")
    scores = {}
    for value, name in labels.items():
        in_truth, in_prediction = a == value, b == value
        total = int(in_truth.sum()) + int(in_prediction.sum())
        overlap = int(np.logical_and(in_truth, in_prediction).sum())
        scores[name] = 2.0 * overlap / total if total else float("nan")
    return scores


def demo_checkpoint() -> Path:
    """The bundled demo checkpoint, or ModelNotAvailableError saying how it is made."""
    from .weights import get_model

    path = get_model(DEMO_MODEL).bundled_path()
    if path is None or not path.is_file():
        raise ModelNotAvailableError(
            f"the demo model is not there yet (expected {path}); it is trained on the phantom "
            "with the scripts in training/ and then bundled; the demo will not fake a result"
        )
    return path


def run_demo(
    out_dir: str | os.PathLike,
    device: str = "auto",
    fast: bool = False,
    progress: Callable[[str, float], None] | None = None,
    checkpoint: str | os.PathLike | None = None,
) -> DemoResult:
    """Make the demo phantom, segment it with the demo model, write ``demo_ct.nii.gz``,
    ``demo_truth.nii.gz`` and ``demo_seg.nii.gz`` into ``out_dir`` (replacing earlier demo
    files, which are regenerated identically) and return per-label Dice and the time taken.

    ``checkpoint`` replaces the bundled demo model, e.g. to try a freshly trained one."""
    from .inference import resolve_device, segment
    from .io import write_image, write_labelmap
    from .tasks import get_task
    from .weights import load_checkpoint

    task = get_task(DEMO_TASK)
    checkpoint = Path(checkpoint) if checkpoint is not None else demo_checkpoint()
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SegResMambaError(f"cannot create output folder {out}: {error.strerror}") from None
    ct, truth = make_phantom(DEMO_SEED)
    run_device = resolve_device(device)
    model, _header = load_checkpoint(checkpoint, task=task)
    started = time.perf_counter()
    seg = segment(ct, task, model, device=run_device, fast=fast, progress=progress)
    seconds = time.perf_counter() - started
    paths = {
        "ct": write_image(ct, out / "demo_ct.nii.gz", overwrite=True),
        "truth": write_labelmap(truth, out / "demo_truth.nii.gz", task, overwrite=True),
        "segmentation": write_labelmap(seg, out / "demo_seg.nii.gz", task, overwrite=True),
    }
    labels = {label.value: label.name for label in task.foreground_labels}
    return DemoResult(dice_per_label(truth, seg, labels), seconds, str(run_device), paths)

"""MONAI dictionary transforms for training and validation, built from the task registry.

The deterministic part (load, channel first, BraTS regions, RAS, task spacing, intensity,
foreground crop) mirrors ``segresmamba.inference.preprocess`` step for step and takes every
parameter from the Task, so the network is trained on what ``segment()`` will show it. The
random part (patch sampling, flips, rotations, intensity changes) follows the task's Recipe.
"""

from __future__ import annotations

import numpy as np
from monai.transforms import (
    Compose,
    ConvertToMultiChannelBasedOnBratsClassesd,
    CropForegroundd,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    NormalizeIntensityd,
    Orientationd,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSpatialCropd,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
)

from segresmamba.inference.preprocess import RAS_LABELS
from segresmamba.tasks import Task

from .recipes import Recipe

__all__ = ["KEYS", "deterministic_transforms", "random_transforms"]

KEYS = ("image", "label")


def _intensity(task: Task) -> object:
    """The task's intensity rule as a dict transform (same rule as ``normalize_intensity``)."""
    rule = task.intensity
    if rule["kind"] == "ct_window":
        return ScaleIntensityRanged(
            keys="image",
            a_min=float(rule["a_min"]),
            a_max=float(rule["a_max"]),
            b_min=float(rule.get("b_min", 0.0)),
            b_max=float(rule.get("b_max", 1.0)),
            clip=bool(rule.get("clip", True)),
        )
    if rule["kind"] == "zscore_nonzero":
        return NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True)
    raise ValueError(f"task {task.name}: unknown intensity rule {rule['kind']!r}")


def _brats_regions(task: Task) -> list:
    """BraTS 2021 labels (1, 2, 4) -> TC, WT, ET channels, checked against the task's order."""
    if task.output != "sigmoid":
        return []
    order = tuple(label.abbreviation for label in task.labels)
    if order != ("TC", "WT", "ET"):  # MONAI's transform writes exactly this order
        raise ValueError(f"task {task.name}: regions are {order}, MONAI writes (TC, WT, ET)")
    et_2021 = task.labelmap.label("ET").value_2021
    return [ConvertToMultiChannelBasedOnBratsClassesd(keys="label", et_label=et_2021)]


def deterministic_transforms(task: Task, crop_foreground: bool = True) -> list:
    """Load -> channel first -> (BraTS regions) -> RAS -> task spacing -> intensity -> crop.

    Images are resampled linearly with border padding as in inference; labels by nearest
    neighbour with zero padding so no structure is smeared into the padding.
    """
    steps = [
        LoadImaged(keys=KEYS, reader="NibabelReader", image_only=True),
        EnsureChannelFirstd(keys=KEYS),
        *_brats_regions(task),
        Orientationd(keys=KEYS, axcodes="RAS", labels=RAS_LABELS),
        Spacingd(
            keys=KEYS,
            pixdim=tuple(task.spacing_mm),
            mode=("bilinear", "nearest"),
            padding_mode=("border", "zeros"),
            dtype=(np.float32, np.float32),
        ),
        _intensity(task),
    ]
    if crop_foreground:
        steps.append(CropForegroundd(keys=KEYS, source_key="image", allow_smaller=True))
    steps.append(EnsureTyped(keys=KEYS, track_meta=True))
    return steps


def random_transforms(task: Task, recipe: Recipe, patch_size: tuple[int, int, int]) -> Compose:
    """Patch sampling and augmentation; seeded per sample by the data loader (exact resume)."""
    patch = tuple(int(p) for p in patch_size)
    steps: list = [SpatialPadd(keys=KEYS, spatial_size=patch, mode="constant")]
    if recipe.crop == "pos_neg":
        steps.append(
            RandCropByPosNegLabeld(
                keys=KEYS,
                label_key="label",
                spatial_size=patch,
                pos=1,
                neg=1,
                num_samples=recipe.samples_per_volume,
                image_key="image",
                image_threshold=0,
            )
        )
    elif recipe.crop == "random":
        steps.append(RandSpatialCropd(keys=KEYS, roi_size=patch, random_size=False))
    else:
        raise ValueError(f"unknown crop {recipe.crop!r}")
    if recipe.flip_prob > 0:
        steps += [RandFlipd(keys=KEYS, prob=recipe.flip_prob, spatial_axis=a) for a in range(3)]
    if recipe.rotate90_prob > 0:
        steps.append(RandRotate90d(keys=KEYS, prob=recipe.rotate90_prob, max_k=3))
    if recipe.intensity_scale > 0:
        steps.append(
            RandScaleIntensityd(
                keys="image", factors=recipe.intensity_scale, prob=recipe.intensity_scale_prob
            )
        )
    if recipe.intensity_shift > 0:
        steps.append(
            RandShiftIntensityd(
                keys="image", offsets=recipe.intensity_shift, prob=recipe.intensity_shift_prob
            )
        )
    return Compose(steps)

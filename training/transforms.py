"""MONAI dictionary transforms for training and validation, built from the task registry.

The deterministic part (load, channel first, BraTS regions, RAS, task spacing, intensity,
foreground crop) mirrors ``segresmamba.inference.preprocess`` step for step and takes every
parameter from the Task, so the network is trained on what ``segment()`` will show it. The
random part (patch sampling, flips, rotations, intensity changes) follows the task's Recipe.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import SimpleITK as sitk
import torch
from monai.transforms import (
    Compose,
    ConvertToMultiChannelBasedOnBratsClassesd,
    CropForegroundd,
    EnsureChannelFirstd,
    EnsureTyped,
    Lambdad,
    LoadImaged,
    MapTransform,
    Orientationd,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSpatialCropd,
    Spacingd,
    SpatialPadd,
)

from segresmamba.inference.geometry import on_reference_grid, same_grid, to_metatensor
from segresmamba.inference.preprocess import RAS_LABELS, normalize_intensity
from segresmamba.tasks import Task

from .recipes import Recipe

__all__ = ["KEYS", "LabelledIndicesd", "LoadCased", "deterministic_transforms", "random_transforms"]

KEYS = ("image", "label")
FG_INDICES, BG_INDICES = "label_fg_indices", "label_bg_indices"


def _intensity(task: Task) -> object:
    """The task's intensity rule as a dict transform: the engine's own ``normalize_intensity``,
    so training and ``segment()`` cannot normalise differently."""
    return Lambdad(keys="image", func=partial(normalize_intensity, intensity=task.intensity))


class LoadCased(MapTransform):
    """Load an own-data case with SimpleITK as ``segment()`` does (NIfTI, NRRD, MHA): channels
    stacked on the first channel's grid (engine's ``on_reference_grid`` + ``to_metatensor``),
    the label as integral float values on the same grid; regions for sigmoid tasks.

    The dataset's ignore value (unlabelled voxels) is kept as it is in a softmax label and
    written into every region channel of a sigmoid label, so one rule finds it in both
    (``training.losses.labelled_mask``); every later step resamples labels by nearest neighbour.
    """

    def __init__(self, task: Task, ignore_value: int | None = None) -> None:
        super().__init__(keys=("image", "label"))
        self.task = task
        self.ignore_value = ignore_value

    def __call__(self, data: dict) -> dict:
        out = dict(data)
        paths = data["image"] if isinstance(data["image"], list) else [data["image"]]
        images = [sitk.ReadImage(str(p), sitk.sitkFloat32) for p in paths]
        reference = images[0]
        channels = [reference] + [on_reference_grid(i, reference) for i in images[1:]]
        out["image"] = to_metatensor(channels)
        label = sitk.ReadImage(str(data["label"]), sitk.sitkFloat32)
        if not same_grid(label, reference):  # checked datasets agree; keep labels crisp anyway
            label = sitk.Resample(label, reference, sitk.Transform(), sitk.sitkNearestNeighbor)
        label_tensor = to_metatensor([label])
        values = np.round(label_tensor.numpy())
        if self.task.output == "sigmoid":
            values = self._regions(values[0])
        label_tensor.set_array(torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)))
        out["label"] = label_tensor
        return out

    def _regions(self, labelmap: np.ndarray) -> np.ndarray:
        if self.ignore_value is None:
            return self.task.labelmap.to_regions(labelmap).astype(np.float32)
        ignored = labelmap == self.ignore_value
        regions = self.task.labelmap.to_regions(np.where(ignored, 0, labelmap))
        regions = regions.astype(np.float32)
        regions[:, ignored] = self.ignore_value
        return regions


class LabelledIndicesd(MapTransform):
    """Where ``RandCropByPosNegLabeld`` may centre its patches when some voxels are ignored:
    positive centres on labelled structures only, negative ones on labelled background inside
    the image (MONAI's own rule, ``image > 0``), never on an ignored voxel."""

    def __init__(self, ignore_value: int) -> None:
        super().__init__(keys=("label",))
        self.ignore_value = ignore_value

    def __call__(self, data: dict) -> dict:
        out = dict(data)
        label = torch.as_tensor(data["label"])
        image = torch.as_tensor(data["image"])
        ignored = label[0] == self.ignore_value
        structure = (label > 0).any(0)
        inside = (image > 0).any(0)
        out[FG_INDICES] = torch.nonzero((structure & ~ignored).flatten())[:, 0]
        out[BG_INDICES] = torch.nonzero((~structure & inside).flatten())[:, 0]
        return out


def _nonzero(image: torch.Tensor) -> torch.Tensor:
    return image != 0


def _brats_regions(task: Task) -> list:
    """BraTS 2021 labels (1, 2, 4) -> TC, WT, ET channels, checked against the task's order."""
    if task.output != "sigmoid":
        return []
    order = tuple(label.abbreviation for label in task.labels)
    if order != ("TC", "WT", "ET"):  # MONAI's transform writes exactly this order
        raise ValueError(f"task {task.name}: regions are {order}, MONAI writes (TC, WT, ET)")
    et_2021 = task.labelmap.label("ET").value_2021
    return [ConvertToMultiChannelBasedOnBratsClassesd(keys="label", et_label=et_2021)]


def deterministic_transforms(
    task: Task,
    crop_foreground: bool = True,
    own_data: bool = False,
    ignore_value: int | None = None,
) -> list:
    """Load -> channel first -> (BraTS regions) -> RAS -> task spacing -> intensity -> crop.

    Images are resampled linearly with border padding as in inference; labels by nearest
    neighbour with zero padding so no structure is smeared into the padding. ``own_data``:
    cases of a user's dataset (segresmamba.datasets), loaded with SimpleITK as ``segment()`` does;
    ``ignore_value``: its label for unlabelled voxels, if it has one.
    """
    if own_data:
        load = [LoadCased(task, ignore_value)]
    else:
        load = [
            LoadImaged(keys=KEYS, reader="NibabelReader", image_only=True),
            EnsureChannelFirstd(keys=KEYS),
            *_brats_regions(task),
        ]
    steps = [
        *load,
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
        select = {"select_fn": _nonzero} if own_data else {}
        steps.append(CropForegroundd(keys=KEYS, source_key="image", allow_smaller=True, **select))
    steps.append(EnsureTyped(keys=KEYS, track_meta=True))
    return steps


def random_transforms(
    task: Task,
    recipe: Recipe,
    patch_size: tuple[int, int, int],
    ignore_value: int | None = None,
) -> Compose:
    """Patch sampling and augmentation; seeded per sample by the data loader (exact resume).

    With an ``ignore_value``, patch centres are drawn from labelled voxels only
    (:class:`LabelledIndicesd`)."""
    patch = tuple(int(p) for p in patch_size)
    steps: list = [SpatialPadd(keys=KEYS, spatial_size=patch, mode="constant")]
    if recipe.crop == "pos_neg":
        indices = {}
        if ignore_value is not None:
            steps.append(LabelledIndicesd(ignore_value))
            indices = {"fg_indices_key": FG_INDICES, "bg_indices_key": BG_INDICES}
        steps.append(
            RandCropByPosNegLabeld(
                keys=KEYS,
                label_key="label",
                spatial_size=patch,
                pos=recipe.pos,
                neg=recipe.neg,
                num_samples=recipe.samples_per_volume,
                image_key="image",
                image_threshold=0,
                **indices,
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

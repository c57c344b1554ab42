"""The dataset fingerprint: what the plan is derived from (nnU-Net's idea, our code).

Spacings and sizes are given along the RAS axes the network works in (the engine reorients every
scan to RAS before resampling), so an anisotropic axis is found whatever the file's axis order.
Intensities are sampled inside the foreground (label > 0) of each case, as nnU-Net does for CT
clipping; CT or MR is read from the channel name, or else from the intensities (air near -1000).
Voxels labelled ``ignore`` (nobody labelled them) count in no class share and are no foreground;
their share is reported on its own.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import SimpleITK as sitk

from segresmamba.datasets import OwnDataset, read_label

__all__ = ["channel_modality", "fingerprint", "ras_axes"]

SAMPLES_PER_CASE = 10_000
"""Foreground voxels sampled per case and channel for the intensity statistics."""
FINGERPRINT_SEED = 1234

MR_NAMES = re.compile(
    r"(^|[^a-z])(mri?|t1|t1c|t1gd|t1ce|t2|t2w|t1w|flair|t2f|adc|dwi|pd|swi|bold|dixon)",
    re.IGNORECASE,
)
CT_NAMES = re.compile(r"(^|[^a-z])(ct|cta|hu)([^a-z]|$)", re.IGNORECASE)


def ras_axes(image: sitk.Image) -> list[int]:
    """For each image axis (i, j, k), the RAS axis (0 x, 1 y, 2 z) it runs along most."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    axes = [int(np.argmax(np.abs(direction[:, column]))) for column in range(3)]
    return axes if sorted(axes) == [0, 1, 2] else [0, 1, 2]


def channel_modality(name: str, stats: dict[str, float]) -> tuple[str, str]:
    """("CT" or "MR", why): from the channel name, else from the intensities."""
    if CT_NAMES.search(name):
        return "CT", f"channel name {name!r}"
    if MR_NAMES.search(name):
        return "MR", f"channel name {name!r}"
    if stats["image_min"] <= -500 or stats["percentile_00_5"] < -100:
        return "CT", "intensities reach below -500 (air in Hounsfield units)"
    return "MR", "no negative Hounsfield-like intensities"


def fingerprint(dataset: OwnDataset) -> dict[str, Any]:
    """Spacings, sizes, per-channel foreground intensities, modality and class frequencies."""
    rng = np.random.default_rng(FINGERPRINT_SEED)
    allowed = dataset.label_values()
    ignore = dataset.ignore_value
    spacings, sizes, samples = [], [], [[] for _ in dataset.channel_names]
    image_min = [np.inf] * len(dataset.channel_names)
    counts: dict[int, int] = {v: 0 for v in sorted(allowed) if v != ignore}
    present: dict[int, int] = {v: 0 for v in counts}
    total = ignored = 0
    for case in dataset.cases:
        label_image = read_label(case.label, case.case_id, allowed)
        axes = ras_axes(label_image)
        spacing, size = [0.0] * 3, [0] * 3
        for axis, (s, n) in enumerate(zip(label_image.GetSpacing(), label_image.GetSize())):
            spacing[axes[axis]], size[axes[axis]] = float(s), int(n)
        spacings.append(spacing)
        sizes.append(size)
        label = sitk.GetArrayViewFromImage(label_image)
        values, numbers = np.unique(label, return_counts=True)
        for value, number in zip(values, numbers):
            if int(value) == ignore:
                ignored += int(number)
                continue
            counts[int(value)] += int(number)
            present[int(value)] += 1
        total += label.size
        structures = label.ravel() > 0
        if ignore is not None:
            structures &= label.ravel() != ignore
        foreground = np.flatnonzero(structures)
        take = rng.choice(foreground, min(SAMPLES_PER_CASE, foreground.size), replace=False)
        for channel, path in enumerate(case.images):
            image = sitk.ReadImage(str(path), sitk.sitkFloat32)  # kept alive: the view uses it
            voxels = sitk.GetArrayViewFromImage(image)
            image_min[channel] = min(image_min[channel], float(voxels.min()))
            samples[channel].append(voxels.ravel()[take])
    spacing_array = np.array(spacings)
    channels = []
    for index, name in enumerate(dataset.channel_names):
        values = np.concatenate(samples[index]) if samples[index] else np.zeros(1)
        stats = {
            "mean": float(values.mean()),
            "std": float(values.std()),
            "median": float(np.median(values)),
            "percentile_00_5": float(np.percentile(values, 0.5)),
            "percentile_99_5": float(np.percentile(values, 99.5)),
            "min": float(values.min()),
            "max": float(values.max()),
            "image_min": float(image_min[index]),
            "samples": int(values.size),
        }
        modality, why = channel_modality(name, stats)
        channels.append({"index": index, "name": name, "modality": modality, "why": why, **stats})
    return {
        "cases": len(dataset.cases),
        "axes": "RAS (x, y, z)",
        "spacings_mm": spacing_array.round(5).tolist(),
        "sizes": sizes,
        "median_spacing_mm": np.median(spacing_array, axis=0).round(5).tolist(),
        "median_size": np.median(np.array(sizes), axis=0).tolist(),
        "channels": channels,
        "class_voxel_share": {str(v): counts[v] / max(total - ignored, 1) for v in counts},
        "class_cases_present": {str(v): present[v] for v in present},
        "ignored_voxel_share": ignored / max(total, 1),
    }

"""From input images to the network's view: one grid, RAS orientation, task spacing, intensity.

Training and inference must see identical preprocessing, so ``training/`` imports these
functions rather than writing its own transforms.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk
from monai.data import MetaTensor
from monai.transforms import NormalizeIntensity, Orientation, ScaleIntensityRange, Spacing

from ..errors import SegResMambaError
from .geometry import on_reference_grid, to_metatensor

__all__ = ["normalize_intensity", "prepare", "to_working_grid", "working_spacing"]

_log = logging.getLogger("segresmamba.inference")

RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


def working_spacing(task, fast: bool = False) -> tuple[float, float, float]:
    """The voxel size (mm) the network works at: the task's, or its coarser fast spacing."""
    return tuple(float(s) for s in (task.fast_spacing_mm if fast else task.spacing_mm))


def to_working_grid(
    volume: MetaTensor, spacing_mm: Sequence[float], mode: str = "bilinear"
) -> MetaTensor:
    """Reorient to RAS and resample to ``spacing_mm`` (MONAI Orientation + Spacing); the
    affine of the result says exactly where each voxel is, so results can be mapped back."""
    volume = Orientation(axcodes="RAS", labels=RAS_LABELS)(volume)
    return Spacing(pixdim=tuple(spacing_mm), mode=mode, padding_mode="border", dtype=np.float32)(
        volume
    )


def normalize_intensity(volume: MetaTensor, intensity: dict) -> MetaTensor:
    """Apply the task's intensity rule: a CT window scaled to [b_min, b_max], or a z-score over
    each channel's non-zero voxels (skull-stripped MRI, where 0 is outside the brain), or one
    rule per channel (``per_channel``, planned from a dataset's fingerprint by training.plan)."""
    kind = intensity.get("kind")
    if kind == "ct_window":
        transform = ScaleIntensityRange(
            a_min=float(intensity["a_min"]),
            a_max=float(intensity["a_max"]),
            b_min=float(intensity.get("b_min", 0.0)),
            b_max=float(intensity.get("b_max", 1.0)),
            clip=bool(intensity.get("clip", True)),
        )
    elif kind == "zscore_nonzero":
        transform = NormalizeIntensity(nonzero=True, channel_wise=True)
    elif kind == "per_channel":
        return _per_channel(volume, intensity["channels"])
    else:
        raise SegResMambaError(f"unknown intensity rule {kind!r} in the task definition")
    return transform(volume)


def _per_channel(volume: MetaTensor, rules: Sequence[dict]) -> MetaTensor:
    """Normalise each channel by its own rule: ``ct`` clips to the dataset's foreground
    percentiles, then z-scores with the dataset's foreground mean and std (nnU-Net's CT rule);
    ``zscore_nonzero`` z-scores over the channel's own non-zero voxels (MRI)."""
    if len(rules) != volume.shape[0]:
        raise SegResMambaError(
            f"the task normalises {len(rules)} channel(s) but the input has {volume.shape[0]}"
        )
    out = volume.clone()
    for index, rule in enumerate(rules):
        channel = volume[index : index + 1]
        if rule["kind"] == "ct":
            low, high = (float(v) for v in rule["clip"])
            channel = (channel.clamp(low, high) - float(rule["mean"])) / float(rule["std"])
        elif rule["kind"] == "zscore_nonzero":
            channel = NormalizeIntensity(nonzero=True)(channel)
        else:
            raise SegResMambaError(f"unknown channel intensity rule {rule['kind']!r}")
        out[index : index + 1] = channel
    return out


def prepare(
    images: Sequence[sitk.Image],
    task,
    fast: bool = False,
    input_names: Sequence[str] | None = None,
) -> MetaTensor:
    """Stack the task's inputs as channels on the first input's grid (extra inputs resampled
    in physical space), reorient to RAS, resample to the task spacing and normalise.

    Returns a (channels, i, j, k) float32 MetaTensor whose ``affine`` (RAS) locates the voxels.
    """
    names = list(input_names or [f"input {n + 1}" for n in range(len(images))])
    reference = images[0]
    channels = [sitk.Cast(reference, sitk.sitkFloat32)]
    channels += [
        on_reference_grid(image, reference, name) for image, name in zip(images[1:], names[1:])
    ]
    volume = to_working_grid(to_metatensor(channels), working_spacing(task, fast))
    del channels
    return normalize_intensity(volume, task.intensity)

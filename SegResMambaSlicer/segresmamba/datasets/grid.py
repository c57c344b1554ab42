"""One grid per case: every channel and the label on the first channel's voxels.

nnU-Net and our training read a case's channels and label voxel by voxel, so a case written
from images on different grids (a T1 at 1 mm and a FLAIR at 3 mm, a segmentation cropped to
its segments) is brought onto the first channel's grid in physical space first: the other
channels linearly, the label by nearest neighbour (labels are not averaged). Images that do not
overlap it at all are refused rather than written as empty volumes.
"""

from __future__ import annotations

import itertools

import numpy as np
import SimpleITK as sitk

from .folder import DIRECTION_TOLERANCE, ORIGIN_TOLERANCE_VOXELS, SPACING_TOLERANCE, DatasetError

__all__ = ["check_overlap", "on_grid", "same_grid"]


def same_grid(image: sitk.Image, reference: sitk.Image) -> bool:
    """Whether ``image`` lies voxel for voxel on ``reference``'s grid (the dataset reader's
    tolerances: 1/1000 of the spacing, 1/100 voxel of origin, 1/1000 in each direction cosine)."""
    if image.GetSize() != reference.GetSize():
        return False
    a, b = np.array(image.GetSpacing()), np.array(reference.GetSpacing())
    if np.any(np.abs(a - b) > SPACING_TOLERANCE * np.maximum(a, b)):
        return False
    shift = np.abs(np.subtract(image.GetOrigin(), reference.GetOrigin()))
    if np.any(shift > ORIGIN_TOLERANCE_VOXELS * b):
        return False
    turn = np.abs(np.subtract(image.GetDirection(), reference.GetDirection()))
    return not np.any(turn > DIRECTION_TOLERANCE)


def _box_in(image: sitk.Image, reference: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """The bounds of ``image``'s voxels (their outer faces) in ``reference``'s continuous
    voxel indices."""
    corners = []
    for corner in itertools.product(*[(-0.5, n - 0.5) for n in image.GetSize()]):
        point = image.TransformContinuousIndexToPhysicalPoint(corner)
        corners.append(reference.TransformPhysicalPointToContinuousIndex(point))
    corners = np.array(corners)
    return corners.min(axis=0), corners.max(axis=0)


def check_overlap(image: sitk.Image, reference: sitk.Image, what: str, against: str) -> None:
    """Raise DatasetError when ``image`` shares no space with ``reference`` (one line naming
    both)."""
    low, high = _box_in(image, reference)
    size = np.array(reference.GetSize())
    if np.any(high <= -0.5) or np.any(low >= size - 0.5):
        raise DatasetError(
            f"{what} and {against} do not overlap in space (their grids share no voxel); "
            "were they taken from different scans?"
        )


def on_grid(image: sitk.Image, reference: sitk.Image, label: bool) -> sitk.Image:
    """``image`` on ``reference``'s grid: as is when it already lies there (geometry copied, so
    headers agree exactly), else resampled in physical space (nearest neighbour for labels,
    linear otherwise, as float32 so no intensity is truncated); outside it reads 0."""
    if same_grid(image, reference):
        out = sitk.Image(image)
        out.CopyInformation(reference)
        return out
    resampler = sitk.ResampleImageFilter()
    resampler.SetReferenceImage(reference)
    resampler.SetTransform(sitk.Transform())
    resampler.SetDefaultPixelValue(0)
    if label:
        resampler.SetInterpolator(sitk.sitkNearestNeighbor)
        resampler.SetOutputPixelType(image.GetPixelID())
    else:
        resampler.SetInterpolator(sitk.sitkLinear)
        resampler.SetOutputPixelType(sitk.sitkFloat32)
    return resampler.Execute(image)

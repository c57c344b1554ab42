"""Geometry between SimpleITK images and MONAI tensors: grids compared, images put on a
reference grid, labels given back their affine. The LPS <-> RAS conversion itself is
:mod:`segresmamba.io.affine`, which the Slicer module shares."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk
import torch
from monai.data import MetaTensor

from ..io.affine import LPS_TO_RAS, affine_to_grid, itk_affine_ras, set_grid

__all__ = [
    "LPS_TO_RAS",
    "affine_to_grid",
    "itk_affine_ras",
    "label_image_from_array",
    "on_reference_grid",
    "same_grid",
    "to_metatensor",
]

_log = logging.getLogger("segresmamba.inference")


def same_grid(a: sitk.Image, b: sitk.Image, tolerance: float = 1e-4) -> bool:
    """True when two images share size, spacing, origin and direction (to ``tolerance``)."""
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tolerance)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tolerance)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=tolerance)
    )


def on_reference_grid(image: sitk.Image, reference: sitk.Image, name: str = "image") -> sitk.Image:
    """``image`` as float32 on ``reference``'s grid, resampled linearly in physical space.

    MRI sequences of one study rarely share a grid; matching them voxel by voxel (or resizing
    by voxel count) misaligns anatomy. Points outside ``image`` become 0 (background).
    """
    if same_grid(image, reference):
        return sitk.Cast(image, sitk.sitkFloat32)
    _log.info(
        "%s is on a different grid (size %s, spacing %s mm) from the first input (size %s, "
        "spacing %s mm); resampled onto the first input's grid in physical space",
        name,
        "x".join(str(s) for s in image.GetSize()),
        "x".join(f"{s:g}" for s in image.GetSpacing()),
        "x".join(str(s) for s in reference.GetSize()),
        "x".join(f"{s:g}" for s in reference.GetSpacing()),
    )
    return sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)


def to_metatensor(images: Sequence[sitk.Image]) -> MetaTensor:
    """Stack images of one grid into a channel-first (C, i, j, k) float32 MetaTensor whose
    affine is the grid's RAS affine, ready for MONAI's Orientation and Spacing."""
    reference = images[0]
    voxels = np.stack(
        [sitk.GetArrayViewFromImage(image).transpose(2, 1, 0) for image in images]
    ).astype(np.float32, copy=False)
    affine = torch.as_tensor(itk_affine_ras(reference), dtype=torch.float64)
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(voxels)), affine=affine)


def label_image_from_array(labels: np.ndarray, affine_ras: np.ndarray | torch.Tensor) -> sitk.Image:
    """A uint8 ITK image from an (i, j, k) label array and its RAS affine."""
    affine = affine_ras.numpy() if isinstance(affine_ras, torch.Tensor) else affine_ras
    image = sitk.GetImageFromArray(np.ascontiguousarray(labels.transpose(2, 1, 0)).astype(np.uint8))
    return set_grid(image, affine)

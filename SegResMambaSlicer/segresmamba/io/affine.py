"""ITK's LPS geometry <-> a RAS voxel-to-world affine: the one conversion every face uses.

ITK stores an image as origin, spacing and a direction matrix in LPS (x to the patient's left,
y posterior); MONAI, NIfTI and Slicer's IJK-to-RAS matrix use a 4x4 voxel-to-world affine in RAS.
Getting this wrong flips or shifts results on scans with unusual orientations, a complaint users
of other segmentation tools raise often, so the engine's inference and the Slicer module both
convert through these functions (numpy and SimpleITK only: Slicer has both before any install).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

__all__ = ["LPS_TO_RAS", "affine_to_grid", "itk_affine_ras", "set_grid"]

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
"""LPS <-> RAS: negate x and y (its own inverse)."""


def itk_affine_ras(image: sitk.Image) -> np.ndarray:
    """The 4x4 voxel (i, j, k) -> RAS mm affine of an ITK image."""
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.array(image.GetSpacing(), dtype=float)
    affine[:3, 3] = image.GetOrigin()
    return LPS_TO_RAS @ affine


def affine_to_grid(affine_ras: np.ndarray) -> tuple[tuple, tuple, tuple]:
    """(spacing, origin, direction) in ITK's LPS terms for a RAS voxel-to-world affine; a
    ValueError for an affine with a zero-length voxel axis (no ITK grid has one)."""
    affine = LPS_TO_RAS @ np.asarray(affine_ras, dtype=float)
    columns = affine[:3, :3]
    spacing = np.linalg.norm(columns, axis=0)
    if np.any(spacing <= 0):
        raise ValueError("the voxel-to-world matrix has a zero-length voxel axis")
    direction = columns / spacing
    return tuple(spacing.tolist()), tuple(affine[:3, 3].tolist()), tuple(direction.ravel().tolist())


def set_grid(image: sitk.Image, affine_ras: np.ndarray) -> sitk.Image:
    """Give ``image`` the grid of a RAS voxel-to-world affine (in place); returns it."""
    spacing, origin, direction = affine_to_grid(affine_ras)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image

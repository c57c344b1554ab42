"""Crop a CT's working volume to the body before the sliding window.

A CT's field of view holds a lot of air around the patient (and often the table); every window
over that air costs a full network pass and can only say "background". The body is found on the
RAW Hounsfield units of the first input, before any normalisation clips them: voxels above
:data:`BODY_HU` (air is -1000, fat -100, lung about -800 but enclosed by the body), the largest
connected component, its bounding box in physical space, then that box on the working grid with
a margin of half a patch on every side (one patch per axis in all), so a voxel at the skin still
sits in windows that see as much outside context as without the crop. Everything outside the box
is labelled background; the labels go back onto the scan's own grid unchanged.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk
import torch

from .geometry import LPS_TO_RAS

__all__ = ["BODY_HU", "MARGIN_PATCHES", "body_box", "body_mask", "box_shape"]

_log = logging.getLogger("segresmamba.inference")

BODY_HU = -500.0
"""Voxels above this many Hounsfield units are body (or table, clothing): air is -1000."""

MARGIN_PATCHES = 0.5
"""Margin around the body's box on each side, in patches (one patch per axis in all)."""

COARSE_MM = 3.0
"""The body is found on a copy binned to about this voxel size: the box does not need
sub-millimetre precision (the margin is centimetres) and a 512x512x600 CT takes a second less."""

Box = tuple[slice, slice, slice]


def body_mask(image: sitk.Image, threshold_hu: float = BODY_HU) -> sitk.Image | None:
    """The largest connected component above ``threshold_hu`` (uint8 0/1) on a copy of
    ``image`` binned to about :data:`COARSE_MM`; None when no voxel is above it."""
    shrink = [max(1, int(COARSE_MM // s)) for s in image.GetSpacing()]
    coarse = sitk.BinShrink(sitk.Cast(image, sitk.sitkFloat32), shrink)
    above = sitk.BinaryThreshold(coarse, float(threshold_hu), 1e30, 1, 0)
    components = sitk.RelabelComponent(sitk.ConnectedComponent(above), sortByObjectSize=True)
    largest = sitk.BinaryThreshold(components, 1, 1, 1, 0)
    statistics = sitk.StatisticsImageFilter()
    statistics.Execute(largest)
    return largest if statistics.GetSum() > 0 else None


def _physical_corners(mask: sitk.Image) -> np.ndarray:
    """The 8 corners (RAS mm, shape 8x3) of the mask's bounding box, one coarse voxel wider on
    every side so that binning never moves the box inwards."""
    shape = sitk.LabelShapeStatisticsImageFilter()
    shape.Execute(mask)
    x, y, z, sx, sy, sz = shape.GetBoundingBox(1)
    lows, highs = (x - 1.5, y - 1.5, z - 1.5), (x + sx + 0.5, y + sy + 0.5, z + sz + 0.5)
    corners = []
    for pick in itertools.product((0, 1), repeat=3):
        index = [highs[a] if pick[a] else lows[a] for a in range(3)]
        corners.append(mask.TransformContinuousIndexToPhysicalPoint(index))
    lps = np.array(corners, dtype=float)
    return lps * np.diag(LPS_TO_RAS)[:3]


def body_box(
    image: sitk.Image,
    affine_ras: np.ndarray | torch.Tensor,
    working_shape: Sequence[int],
    patch_size: Sequence[int],
    threshold_hu: float = BODY_HU,
    margin_patches: float = MARGIN_PATCHES,
) -> Box | None:
    """The body's box on the working grid (slices of its i, j, k axes), or None to keep the
    whole volume: nothing above ``threshold_hu``, or the box would cover it all anyway.

    ``image``: the raw first input (HU) on its own grid; ``affine_ras``: the working grid's
    voxel -> RAS mm affine; ``working_shape``: its (i, j, k) size; ``patch_size``: the task's.
    """
    mask = body_mask(image, threshold_hu)
    if mask is None:
        _log.info("no voxel above %g HU: the whole volume is segmented", threshold_hu)
        return None
    affine = affine_ras.numpy() if isinstance(affine_ras, torch.Tensor) else affine_ras
    corners = _physical_corners(mask)
    to_index = np.linalg.inv(np.asarray(affine, dtype=float))
    index = (to_index[:3, :3] @ corners.T).T + to_index[:3, 3]
    slices = []
    for axis, size in enumerate(working_shape):
        margin = math.ceil(margin_patches * int(patch_size[axis]))
        start = max(0, math.floor(index[:, axis].min()) - margin)
        stop = min(int(size), math.ceil(index[:, axis].max()) + 1 + margin)
        if stop <= start:  # the body lies outside the working grid: keep everything
            return None
        slices.append(slice(start, stop))
    box = tuple(slices)
    if box_shape(box) == tuple(int(s) for s in working_shape):
        return None
    return box  # type: ignore[return-value]


def box_shape(box: Box) -> tuple[int, int, int]:
    """The (i, j, k) size of a box of slices."""
    return tuple(int(s.stop - s.start) for s in box)  # type: ignore[return-value]

"""Input checks that turn images the network cannot segment into one clear sentence each."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ..errors import SegResMambaError

__all__ = ["non_finite_message", "validate_image"]


def non_finite_message(name: str, count: int) -> str:
    return (
        f"{name} has {count} NaN or infinite voxel(s); replace them (e.g. with the background "
        "value) before segmenting"
    )


def validate_image(image: sitk.Image, name: str = "image") -> sitk.Image:
    """Return ``image`` as one 3D scalar volume, or raise SegResMambaError saying why it is not.

    Rejected: vector/colour images, 4D series, 2D images (or 3D with a single slice), NaN or
    infinite voxels, and constant images (all voxels equal: a blank export or the wrong file).
    A 4D image holding a single volume is accepted as that 3D volume.
    """
    if image.GetNumberOfComponentsPerPixel() > 1:
        raise SegResMambaError(
            f"{name} has {image.GetNumberOfComponentsPerPixel()} values per voxel (a vector, colour "
            "or multi-channel image); give each channel as its own 3D volume"
        )
    size = image.GetSize()
    if image.GetDimension() > 3:
        if image.GetDimension() > 4 or size[3] != 1:
            volumes = int(np.prod(size[3:]))
            raise SegResMambaError(
                f"{name} is {image.GetDimension()}D ({volumes} volumes of "
                f"{size[0]}x{size[1]}x{size[2]}); split it into 3D volumes and give each as an input"
            )
        image = sitk.Extract(image, [*size[:3], 0], [0, 0, 0, 0])
        size = image.GetSize()
    if image.GetDimension() < 3 or min(size) < 2:
        shape = "x".join(str(s) for s in size)
        raise SegResMambaError(
            f"{name} is a 2D image ({shape} voxels); SegResMamba segments 3D volumes"
        )
    voxels = sitk.GetArrayViewFromImage(image)
    if np.issubdtype(voxels.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(voxels)))
        if bad:
            raise SegResMambaError(non_finite_message(name, bad))
    low, high = voxels.min(), voxels.max()
    if low == high:
        raise SegResMambaError(
            f"{name} is blank: every voxel has the value {low.item():g}; check that the right "
            "file was given"
        )
    return image

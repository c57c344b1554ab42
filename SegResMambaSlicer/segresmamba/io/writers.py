"""Writing volumes and segmentations: ``.nii.gz``/``.nii``, ``.nrrd``, ``.mha`` and ``.seg.nrrd``.

Every write is atomic (see :mod:`.atomic`) and refuses to replace an existing file unless
``overwrite=True``. The output format follows the file name, as users expect from Slicer.
"""

from __future__ import annotations

import os
from pathlib import Path

import SimpleITK as sitk

from ..errors import SegResMambaError
from .atomic import atomic_output, full_suffix
from .seg_nrrd import Segment, terminology_entry, write_segmentation

__all__ = [
    "IMAGE_SUFFIXES",
    "LABELMAP_SUFFIXES",
    "segments_for",
    "write_image",
    "write_labelmap",
]

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")
LABELMAP_SUFFIXES = (".nii.gz", ".nrrd", ".seg.nrrd", ".nii", ".mha")


def _check_suffix(path: Path, allowed: tuple[str, ...]) -> str:
    suffix = full_suffix(path)
    if suffix not in allowed:
        raise SegResMambaError(
            f"cannot write {path.name}: unknown output format {suffix or '(no extension)'}; "
            f"use {', '.join(allowed)}"
        )
    return suffix


def write_image(image: sitk.Image, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write any volume (a CT, a labelmap without names) in the format its name asks for."""
    path = Path(path)
    _check_suffix(path, IMAGE_SUFFIXES)
    with atomic_output(path, overwrite) as temporary:
        try:
            sitk.WriteImage(image, str(temporary), useCompression=True)
        except RuntimeError:
            raise SegResMambaError(f"cannot write {path}: the image writer failed") from None
    return path


def segments_for(task, image: sitk.Image, convention: str = "2023") -> list[Segment]:
    """The named, coloured, coded segments of ``image`` for ``task``.

    Softmax tasks: one segment per foreground label. Sigmoid tasks: a multi-component image
    holds the overlapping regions (one layer each, value 1); a scalar image is the combined
    labelmap (BraTS NCR/ED/ET in ``convention``).
    """
    if image.GetNumberOfComponentsPerPixel() > 1:
        if task.output != "sigmoid" or image.GetNumberOfComponentsPerPixel() != len(task.labels):
            raise SegResMambaError(
                f"a {image.GetNumberOfComponentsPerPixel()}-component image does not match task "
                f"{task.name}'s {len(task.labels)} output(s)"
            )
        return [
            Segment(
                label.name,
                1,
                label.color,
                terminology_entry(label.terminology),
                layer=i,
                codes=label.terminology,
            )
            for i, label in enumerate(task.labels)
        ]
    if task.output == "sigmoid":
        return [
            Segment(
                label.name,
                label.value_in(convention),
                label.color,
                terminology_entry(label.terminology),
                codes=label.terminology,
            )
            for label in task.labelmap.labels
        ]
    return [
        Segment(
            label.name,
            label.value,
            label.color,
            terminology_entry(label.terminology),
            codes=label.terminology,
        )
        for label in task.foreground_labels
    ]


def write_labelmap(
    image: sitk.Image,
    path: str | os.PathLike,
    task,
    overwrite: bool = False,
    convention: str = "2023",
) -> Path:
    """Write a segmentation result for ``task``: ``.seg.nrrd`` with Slicer's segment names,
    colours and terminology; ``.nii.gz``/``.nrrd``/``.mha`` as a plain labelmap.

    ``image`` is a uint8 labelmap (or, for sigmoid tasks, the multi-component region masks
    that :func:`segresmamba.inference.segment` returns). ``convention`` picks the BraTS label
    values of a combined BraTS labelmap ("2023": ET = 3, "2021": ET = 4).
    """
    path = Path(path)
    suffix = _check_suffix(path, LABELMAP_SUFFIXES)
    pixel = image.GetPixelID()
    if pixel not in (sitk.sitkUInt8, sitk.sitkVectorUInt8):
        image = sitk.Cast(
            image,
            sitk.sitkVectorUInt8 if image.GetNumberOfComponentsPerPixel() > 1 else sitk.sitkUInt8,
        )
    if suffix == ".seg.nrrd":
        return write_segmentation(image, path, segments_for(task, image, convention), overwrite)
    return write_image(image, path, overwrite)

"""3D Slicer segmentation files (``.seg.nrrd``): a labelmap plus the header Slicer reads.

Slicer turns each ``Segment{i}_*`` field into a named, coloured segment with its terminology
(SNOMED CT codes), so a result opens in the Segment Editor as organs, not as bare numbers.
Overlapping regions (BraTS tumour core inside whole tumour) go into separate layers: the file
is then 4D, one layer per region, as Slicer itself writes overlapping segments.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nrrd
import numpy as np
import SimpleITK as sitk

from ..errors import SegResMambaError
from .atomic import atomic_output

__all__ = ["TERMINOLOGY_CONTEXT", "Segment", "terminology_entry", "write_segmentation"]

TERMINOLOGY_CONTEXT = "Segmentation category and type - DICOM master list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"


@dataclass(frozen=True)
class Segment:
    """One segment of a ``.seg.nrrd``: which voxels (label value in a layer) and what it is."""

    name: str
    label_value: int
    color: tuple[float, float, float]
    terminology: str = ""
    layer: int = 0
    codes: Any = None
    """The task label's Terminology (category, type, modifier codes), for DICOM writers."""


def terminology_entry(terminology) -> str:
    """Slicer's TerminologyEntry string for a task's Terminology (category, type, modifier).

    Format: ``context~category~type~modifier~anatomic context~region~region modifier``, each code
    as ``scheme^value^meaning`` (``^^`` when absent).
    """
    codes = (terminology.category, terminology.type, terminology.modifier)
    parts = [code.slicer_triplet() if code is not None else "^^" for code in codes]
    return "~".join([TERMINOLOGY_CONTEXT, *parts, ANATOMIC_CONTEXT, "^^", "^^"])


def _extents(layers: np.ndarray, segments: Sequence[Segment]) -> list[str]:
    """Each segment's voxel bounding box as Slicer's ``i0 i1 j0 j1 k0 k1`` (``0 -1 ...`` if empty)."""
    extents = []
    for segment in segments:
        mask = layers[segment.layer] == segment.label_value
        if not mask.any():
            extents.append("0 -1 0 -1 0 -1")
            continue
        bounds = []
        for axis in range(3):
            present = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
            bounds += [int(present[0]), int(present[-1])]
        extents.append(" ".join(str(b) for b in bounds))
    return extents


def write_segmentation(
    labelmap: sitk.Image,
    path: str | os.PathLike,
    segments: Sequence[Segment],
    overwrite: bool = False,
) -> Path:
    """Write ``labelmap`` as a Slicer ``.seg.nrrd`` with one header entry per segment.

    ``labelmap`` is a scalar label image (layer 0) or a multi-component image with one component
    per layer (overlapping regions). Written atomically; existing files need ``overwrite``.
    """
    path = Path(path)
    if not path.name.lower().endswith(".seg.nrrd"):
        raise SegResMambaError(f"a Slicer segmentation file must end in .seg.nrrd, got {path.name}")
    if labelmap.GetDimension() != 3:
        raise SegResMambaError(f"a segmentation must be 3D, got {labelmap.GetDimension()}D")
    voxels = sitk.GetArrayFromImage(labelmap)  # (z, y, x[, layer])
    if voxels.ndim == 3:
        voxels = voxels[..., None]
    if voxels.min() < 0 or voxels.max() > 255:
        raise SegResMambaError("segmentation labels must be within 0..255")
    layers = np.ascontiguousarray(voxels.transpose(3, 2, 1, 0).astype(np.uint8))  # (layer, x, y, z)
    n_layers = layers.shape[0]
    if any(s.layer >= n_layers for s in segments):
        raise ValueError(f"a segment names a layer beyond the image's {n_layers} layer(s)")

    direction = np.array(labelmap.GetDirection(), dtype=float).reshape(3, 3)
    axes = (direction * np.array(labelmap.GetSpacing(), dtype=float)).T  # one row per voxel axis
    header = {
        "type": "unsigned char",
        "space": "left-posterior-superior",
        "space origin": np.array(labelmap.GetOrigin(), dtype=float),
        "encoding": "gzip",
        "Segmentation_MasterRepresentation": "Binary labelmap",
        "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
        "Segmentation_ReferenceImageExtentOffset": "0 0 0",
    }
    if n_layers == 1:
        data = layers[0]
        header.update({"space directions": axes, "kinds": ["domain"] * 3})
    else:
        data = layers
        header.update(
            {
                "space directions": np.vstack([np.full(3, np.nan), axes]),
                "kinds": ["list", "domain", "domain", "domain"],
            }
        )
    for i, (segment, extent) in enumerate(zip(segments, _extents(layers, segments))):
        tags = "Segmentation.Status:inprogress|"
        if segment.terminology:
            tags += f"TerminologyEntry:{segment.terminology}|"
        header.update(
            {
                f"Segment{i}_ID": segment.name,
                f"Segment{i}_Name": segment.name,
                f"Segment{i}_NameAutoGenerated": "0",
                f"Segment{i}_Color": " ".join(f"{c:.6g}" for c in segment.color),
                f"Segment{i}_ColorAutoGenerated": "0",
                f"Segment{i}_LabelValue": str(segment.label_value),
                f"Segment{i}_Layer": str(segment.layer),
                f"Segment{i}_Extent": extent,
                f"Segment{i}_Tags": tags,
            }
        )
    with atomic_output(path, overwrite) as temporary:
        nrrd.write(str(temporary), data, header, index_order="F", compression_level=6)
    return path

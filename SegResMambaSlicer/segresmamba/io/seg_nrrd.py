"""3D Slicer segmentation files (``.seg.nrrd``): a labelmap plus the header Slicer reads.

Slicer turns each ``Segment{i}_*`` field into a named, coloured segment with its terminology
(SNOMED CT codes), so a result opens in the Segment Editor as organs, not as bare numbers.
Overlapping regions (BraTS tumour core inside whole tumour) go into separate layers: the file
is then 4D, one layer per region, as Slicer itself writes overlapping segments.

The same file is read back (:func:`read_segmentation`) when a user's corrected segmentation
becomes a training case, and Slicer's terminology string is parsed in one place
(:func:`parse_terminology_entry`) for files and for the segments of a Slicer scene alike.
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
from ..tasks.types import Code, Terminology
from .atomic import atomic_output

__all__ = [
    "TERMINOLOGY_CONTEXT",
    "Segment",
    "parse_terminology_entry",
    "read_segmentation",
    "terminology_entry",
    "write_segmentation",
]

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


def _code(triplet: str) -> Code | None:
    """``scheme^value^meaning`` -> Code; None for Slicer's empty ``^^`` (or no value)."""
    scheme, _, rest = triplet.strip().partition("^")
    value, _, meaning = rest.partition("^")
    if not value.strip():
        return None
    return Code(scheme.strip(), value.strip(), meaning.strip())


def parse_terminology_entry(entry: str | None) -> Terminology | None:
    """The codes of a Slicer TerminologyEntry string (see :func:`terminology_entry`), or None
    when it names no category and type (empty, or not a terminology string).

    Only category, type and modifier are read: they say what a segment is. The anatomic region
    fields (parts 5 to 7) are left out, as the task labels carry none.
    """
    parts = (entry or "").split("~")
    if len(parts) < 3:
        return None
    category, kind = _code(parts[1]), _code(parts[2])
    if category is None or kind is None:
        return None
    modifier = _code(parts[3]) if len(parts) > 3 else None
    return Terminology(category, kind, modifier)


def _tags(text: str) -> dict[str, str]:
    """Slicer's segment tags ``key:value|key:value|`` as a dict (values may hold ``:``)."""
    tags = {}
    for item in text.split("|"):
        key, sep, value = item.partition(":")
        if sep and key.strip():
            tags[key.strip()] = value
    return tags


def _field(reader: sitk.ImageFileReader, key: str, default: str = "") -> str:
    return reader.GetMetaData(key) if reader.HasMetaDataKey(key) else default


def _segment(reader: sitk.ImageFileReader, i: int, n_layers: int, n_segments: int) -> Segment:
    name = _field(reader, f"Segment{i}_Name") or _field(reader, f"Segment{i}_ID")
    color = tuple(float(c) for c in _field(reader, f"Segment{i}_Color", "0.5 0.5 0.5").split())
    if len(color) != 3:
        raise ValueError(f"Segment{i}_Color must hold three numbers")
    default_layer = i if n_layers == n_segments > 1 else 0  # older files: a layer per segment
    layer = int(_field(reader, f"Segment{i}_Layer", str(default_layer)))
    if not 0 <= layer < n_layers:
        raise ValueError(f"segment {name!r} names layer {layer} of {n_layers}")
    terminology = _tags(_field(reader, f"Segment{i}_Tags")).get("TerminologyEntry", "")
    return Segment(
        name=name.strip(),
        label_value=int(_field(reader, f"Segment{i}_LabelValue", "1")),
        color=color,  # type: ignore[arg-type]
        terminology=terminology,
        layer=layer,
        codes=parse_terminology_entry(terminology),
    )


def read_segmentation(path: str | os.PathLike) -> tuple[sitk.Image, list[Segment]]:
    """A Slicer ``.seg.nrrd``: its voxels (a scalar image, or one component per layer when
    segments overlap) and its segments (name, colour, terminology, layer, label value), in
    the file's order.

    Any voxel grid Slicer writes is kept as stored (a file cropped to its segments has the
    origin of its first stored voxel). Raises SegResMambaError naming the file when it cannot
    be read or holds no segment.
    """
    path = Path(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        image = reader.Execute()
    except RuntimeError:
        raise SegResMambaError(
            f"cannot read {path}: not a readable segmentation file (damaged, truncated or "
            "another format)"
        ) from None
    if image.GetDimension() != 3:
        raise SegResMambaError(f"cannot read {path}: a segmentation must be 3D")
    n_segments = 0
    while reader.HasMetaDataKey(f"Segment{n_segments}_ID") or reader.HasMetaDataKey(
        f"Segment{n_segments}_Name"
    ):
        n_segments += 1
    if not n_segments:
        raise SegResMambaError(f"{path} holds no Slicer segments (no Segment0_Name field)")
    n_layers = image.GetNumberOfComponentsPerPixel()
    try:
        segments = [_segment(reader, i, n_layers, n_segments) for i in range(n_segments)]
    except ValueError as error:
        raise SegResMambaError(f"{path}: malformed segment header: {error}") from None
    return image, segments


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

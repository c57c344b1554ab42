"""What a user labelled, matched to what a dataset (or task) calls its labels.

A correction comes as Slicer segments (a ``.seg.nrrd`` or the segments of a scene: names,
colours, terminology codes, overlapping layers allowed) or as a plain labelmap of values. Each
segment is matched to a dataset label by its name (case and outer spaces ignored), then by its
terminology code (category, type and modifier values), and refused with one line naming it when
neither matches exactly one label: a wrong label taught to a model is worse than none.

Segments paint the case's labelmap in their order (a later segment wins where they overlap, as
Slicer's own export does); for a region-based dataset (nnU-Net ``regions_class_order``) each
region paints its class value in the dataset's region order, as nnU-Net turns regions into a
labelmap. A segment named ``ignore`` marks voxels nobody labelled.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from ..io.atomic import full_suffix
from ..io.seg_nrrd import read_segmentation
from ..tasks.types import Terminology
from .folder import IGNORE, INTEGRAL_TOLERANCE, DatasetError

__all__ = [
    "LabelSource",
    "SegmentInfo",
    "TargetLabel",
    "labelmap_from_source",
    "read_label_source",
    "safe_name",
    "targets_from_segments",
    "targets_from_task",
]


@dataclass(frozen=True)
class SegmentInfo:
    """One segment: what it is (name, colour, codes) and where its voxels are (the voxels of
    ``layer`` that hold ``value``)."""

    name: str
    color: tuple[float, float, float]
    terminology: Terminology | None
    layer: int = 0
    value: int = 1


@dataclass(frozen=True)
class LabelSource:
    """A user's labels on their own grid: ``image`` is a scalar image (one layer) or has one
    component per layer; ``segments`` is None for a plain labelmap, whose values are labels."""

    image: sitk.Image
    segments: tuple[SegmentInfo, ...] | None
    source: str


@dataclass(frozen=True)
class TargetLabel:
    """A label of the dataset being written: its value (an int, or a region's values), the
    value it paints in the labelmap, and the colour and codes it was created with."""

    name: str
    value: int | tuple[int, ...]
    paint: int
    color: tuple[float, float, float] | None = None
    terminology: Terminology | None = None


def _plain_labelmap(path: Path) -> LabelSource:
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError:
        raise DatasetError(
            f"cannot read labels {path}: not a readable NIfTI, NRRD or MHA labelmap"
        ) from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise DatasetError(f"labels {path}: a labelmap must be a 3D single-component image")
    return LabelSource(image, None, path.name)


def read_label_source(path: str | os.PathLike) -> LabelSource:
    """A ``.seg.nrrd`` (segments with names, colours, codes) or a plain labelmap file."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"labels {path} do not exist")
    if full_suffix(path) != ".seg.nrrd":
        return _plain_labelmap(path)
    try:
        image, segments = read_segmentation(path)
    except DatasetError:
        raise
    except Exception as error:  # SegResMambaError from the reader: same one line, our class
        raise DatasetError(" ".join(str(error).split())) from None
    infos = tuple(SegmentInfo(s.name, s.color, s.codes, s.layer, s.label_value) for s in segments)
    return LabelSource(image, infos, path.name)


def _key(name: str) -> str:
    return name.strip().lower()


def _codes(terminology: Terminology | None) -> tuple[str, str, str | None] | None:
    if terminology is None:
        return None
    modifier = terminology.modifier.value if terminology.modifier is not None else None
    return terminology.category.value, terminology.type.value, modifier


def _match(segment: SegmentInfo, targets: Sequence[TargetLabel], source: str) -> TargetLabel:
    """The target a segment is: by name, else by terminology code; refuse anything else."""
    by_name = [t for t in targets if _key(t.name) == _key(segment.name)]
    if by_name:
        return by_name[0]
    codes = _codes(segment.terminology)
    by_code = [t for t in targets if codes is not None and _codes(t.terminology) == codes]
    if len(by_code) == 1:
        return by_code[0]
    names = ", ".join(t.name for t in targets if t.value != 0)
    if by_code:
        raise DatasetError(
            f"{source}: segment {segment.name!r} has the terminology code of several labels "
            f"({', '.join(t.name for t in by_code)}); name it after one of them"
        )
    raise DatasetError(
        f"{source}: segment {segment.name!r} is not a label of this dataset (labels: {names});"
        " rename it to one of them, or add it to a new dataset"
    )


def targets_from_segments(segments: Sequence[SegmentInfo]) -> list[TargetLabel]:
    """A new dataset's labels: background, then one label per segment name in segment order
    (values 1..N), with each segment's colour and codes. ``background``/``ignore`` are not new
    labels."""
    targets = [TargetLabel("background", 0, 0)]
    for segment in segments:
        if _key(segment.name) in {_key(t.name) for t in targets} | {IGNORE}:
            continue
        if not segment.name:
            raise DatasetError("a segment without a name cannot name a new label")
        value = len(targets)
        targets.append(TargetLabel(segment.name, value, value, segment.color, segment.terminology))
    if len(targets) > 255:
        raise DatasetError(f"{len(targets) - 1} labels do not fit an 8-bit labelmap")
    return targets


def targets_from_task(task: Any) -> list[TargetLabel]:
    """A new dataset's labels from a task: its label values (softmax), or for a task of
    overlapping regions (sigmoid, e.g. BraTS) its regions over the labelmap's values, listed in
    the labelmap's paint order with their class values (nnU-Net's region-based layout)."""
    if task.output != "sigmoid":
        return [
            TargetLabel(label.name, label.value, label.value, label.color, label.terminology)
            for label in task.labels
        ]
    rules = task.labelmap
    by_region = {label.abbreviation: label for label in task.labels}
    targets = [TargetLabel("background", 0, 0)]
    for region, paint in rules.paint_order:
        label = by_region[region]
        values = tuple(int(v) for v in rules.regions[region])
        targets.append(TargetLabel(label.name, values, paint, label.color, label.terminology))
    return targets


def _layers(source: LabelSource) -> np.ndarray:
    """(layer, k, j, i) voxels of the source."""
    array = sitk.GetArrayFromImage(source.image)
    return array[None] if array.ndim == 3 else np.moveaxis(array, -1, 0)


def _integral_values(array: np.ndarray, source: str) -> np.ndarray:
    found = np.unique(array)
    off = found[np.abs(found - np.round(found)) > INTEGRAL_TOLERANCE]
    if off.size:
        raise DatasetError(f"labels {source} hold non-integral value {off[0]:g}")
    return np.round(found).astype(np.int64)


def _from_plain(source: LabelSource, targets: Sequence[TargetLabel], ignore: int | None):
    array = sitk.GetArrayFromImage(source.image)
    allowed = {v for t in targets for v in (t.value if isinstance(t.value, tuple) else (t.value,))}
    allowed |= {ignore} if ignore is not None else set()
    found = _integral_values(array, source.source)
    unknown = sorted(int(v) for v in found if int(v) not in allowed)
    if unknown:
        raise DatasetError(
            f"labels {source.source} hold value {unknown[0]}, which is no label of this dataset "
            f"(values {sorted(allowed)})"
        )
    labelmap = np.round(array).astype(np.uint8)
    ignored = labelmap == ignore if ignore is not None else np.zeros(labelmap.shape, bool)
    return labelmap, labelmap != 0, ignored


def _from_segments(source: LabelSource, targets: Sequence[TargetLabel], region_based: bool):
    layers = _layers(source)
    labelmap = np.zeros(layers.shape[1:], np.uint8)
    labelled = np.zeros(layers.shape[1:], bool)
    ignored = np.zeros(layers.shape[1:], bool)
    painted: list[tuple[int, TargetLabel, np.ndarray]] = []
    for segment in source.segments or ():
        mask = layers[segment.layer] == segment.value
        labelled |= mask
        if _key(segment.name) == IGNORE:
            ignored |= mask
            continue
        target = _match(segment, targets, source.source)
        order = list(targets).index(target) if region_based else len(painted)
        painted.append((order, target, mask))
    # segments paint in their order; regions in the dataset's order (nnU-Net's), later ones win
    for _order, target, mask in sorted(painted, key=lambda item: item[0]):
        labelmap[mask] = target.paint
    return labelmap, labelled, ignored


def labelmap_from_source(
    source: LabelSource, targets: Sequence[TargetLabel], ignore: int | None, region_based: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labelmap (k, j, i) uint8, labelled voxels, voxels marked ignore) of a source already
    on the case's grid. Raises DatasetError for a segment or a
    value that is no label of the dataset."""
    if source.segments is None:
        return _from_plain(source, targets, ignore)
    return _from_segments(source, targets, region_based)


def safe_name(text: str, fallback: str = "case") -> str:
    """A file-safe identifier: letters, digits, ``-``, ``_`` and ``.``, not starting with a dot."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.strip()).strip("._-") or fallback

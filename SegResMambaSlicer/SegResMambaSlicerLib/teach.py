"""*Add to training set*: the task's input volumes and a segmentation node of the scene become
one training case, written by the engine's one dataset writer
(:func:`segresmamba.datasets.add_case`, the same as ``segresmamba dataset add``).

Each segment is exported by Slicer's own segmentation logic onto the first volume's grid (where
Slicer shows it: oblique, mirrored or under a linear transform alike) and keeps its name,
colour and terminology, which the engine matches to the dataset's labels. Volumes become
images with their world geometry (:func:`volumes.volume_to_image`), so the written channels
and label sit exactly where the user saw them.

By default a task's cases go to ``$SEGRESMAMBA_HOME/datasets/<name>``, where ``<name>`` is the
task's name, or ``<task>-own`` for a built-in task such as ``btcv``: the model trained on the
user's cases is a task of its own and must not take the published model's name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from .segmentation import _export_segment, temporary_labelmap
from .volumes import ijk_to_world, volume_to_image

__all__ = [
    "add_scene_case",
    "default_case_id",
    "scene_label_source",
    "segment_terminology",
]


def default_case_id(node) -> str:
    """A case id from a volume's name, safe as a file name (``BRATS13 001 flair`` ->
    ``BRATS13_001_flair``)."""
    from segresmamba.datasets.labels import safe_name

    return safe_name(node.GetName() or "", "case")


def segment_terminology(segment) -> str:
    """A segment's TerminologyEntry string ("" when it has none), in any Slicer version."""
    if hasattr(segment, "GetTerminology"):  # Slicer 5.7 and later
        return segment.GetTerminology() or ""
    import vtk

    value = vtk.reference("")
    return str(value) if segment.GetTag("TerminologyEntry", value) else ""


def _pack(masks: list[np.ndarray]) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
    """Masks into as few uint8 layers as possible (values 1, 2, ... in a layer), as Slicer
    shares labelmaps; overlapping segments go to separate layers. Returns the layers and each
    mask's (layer, value)."""
    layers: list[np.ndarray] = []
    places = []
    for mask in masks:
        for index, layer in enumerate(layers):
            value = int(layer.max()) + 1
            if value < 256 and not np.any(layer[mask]):
                layer[mask] = value
                places.append((index, value))
                break
        else:
            layer = np.zeros(mask.shape, np.uint8)
            layer[mask] = 1
            layers.append(layer)
            places.append((len(layers) - 1, 1))
    return layers, places


def scene_label_source(scene, segmentation_node, reference_node):
    """The segments of ``segmentation_node`` on ``reference_node``'s grid, with their names,
    colours and terminology codes, as the engine's LabelSource (segment order kept)."""
    from segresmamba.datasets import LabelSource, SegmentInfo
    from segresmamba.io.affine import set_grid
    from segresmamba.io.seg_nrrd import parse_terminology_entry

    segmentation = segmentation_node.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    with temporary_labelmap(scene) as labelmap_node:
        masks = [
            _export_segment(scene, segmentation_node, segment_id, reference_node, labelmap_node)
            for segment_id in ids
        ]
    if not masks:
        dims = reference_node.GetImageData().GetDimensions()
        masks = [np.zeros(dims[::-1], bool)]  # no segment: the engine refuses it as empty
    layers, places = _pack(masks)
    infos = []
    for segment_id, (layer, value) in zip(ids, places):
        segment = segmentation.GetSegment(segment_id)
        codes = parse_terminology_entry(segment_terminology(segment))
        color = tuple(float(c) for c in segment.GetColor())
        infos.append(SegmentInfo(segment.GetName().strip(), color, codes, layer, value))
    array = layers[0] if len(layers) == 1 else np.stack(layers, axis=-1)
    image = sitk.GetImageFromArray(array, isVector=len(layers) > 1)
    set_grid(image, ijk_to_world(reference_node))
    return LabelSource(image, tuple(infos), f"segmentation {segmentation_node.GetName()!r}")


def _resolve_task(task: Any) -> tuple[Any, str]:
    """(the Task, or None for a name no registry knows: a new task), and its name."""
    from segresmamba.errors import UnknownTaskError
    from segresmamba.tasks import get_task

    if not isinstance(task, str):
        return task, task.name
    try:
        return get_task(task), task
    except UnknownTaskError:
        return None, task


def _channel_names(task: Any, dataset_dir: Path, nodes: Sequence) -> list[str]:
    """The channel each node fills: the task's inputs; for a new task, the dataset's channels
    in the order given, or for a new dataset each node's MRI sequence or name."""
    from segresmamba.datasets.labels import safe_name
    from segresmamba.datasets.layout import existing_layout
    from segresmamba.tasks.matching import recognise_sequence

    if task is not None:
        return [spec.name for spec in task.inputs]
    layout = existing_layout(dataset_dir)
    if layout is not None and len(layout.channel_names) == len(nodes):
        return list(layout.channel_names)
    names = [recognise_sequence(n.GetName() or "") or safe_name(n.GetName(), "") for n in nodes]
    unique = [name or f"image{i}" for i, name in enumerate(names)]
    if len(set(unique)) < len(unique):
        unique = [f"{name}_{i}" for i, name in enumerate(unique)]
    return unique


def add_scene_case(
    scene,
    task,
    input_nodes: Sequence,
    segmentation_node,
    dataset_dir: str | Path | None = None,
    case_id: str | None = None,
    partial: bool = False,
    replace: bool = False,
):
    """Add the case on screen to a training set; returns the engine's AddedCase (case id,
    dataset folder, the labels the case holds, whether and where ``ignore`` was written).

    ``task`` is a Task, a task name, or a new name (then the labels come from the segments).
    ``input_nodes`` are the task's input volumes in its input order; the first one's grid is
    the case's grid. ``case_id`` defaults to the first volume's name made safe. A case of the
    same id is replaced only with ``replace`` (ask the user first; CaseExistsError otherwise).
    Every refusal is a DatasetError with one line, and nothing is written.
    """
    from segresmamba.datasets import DatasetError, add_case
    from segresmamba.datasets.layout import default_dataset_dir, own_task_name
    from segresmamba.datasets.writer import check_image_count

    if not input_nodes:
        raise DatasetError("choose the input volume(s) of the case")
    if segmentation_node is None:
        raise DatasetError("choose the segmentation that labels the case")
    resolved, name = _resolve_task(task)
    check_image_count(None, resolved, len(input_nodes))
    folder = Path(dataset_dir) if dataset_dir else default_dataset_dir(name)
    try:
        channels = _channel_names(resolved, folder, input_nodes)
        images = {channel: volume_to_image(node) for channel, node in zip(channels, input_nodes)}
        labels = scene_label_source(scene, segmentation_node, input_nodes[0])
    except (ValueError, RuntimeError) as error:
        raise DatasetError(" ".join(str(error).split())) from None
    return add_case(
        folder,
        case_id or default_case_id(input_nodes[0]),
        images,
        labels,
        task=resolved,
        partial=partial,
        replace=replace,
        name=own_task_name(name),
    )

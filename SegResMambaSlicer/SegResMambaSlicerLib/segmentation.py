"""Engine labels -> a named, coloured, terminology-coded segmentation node, and back.

One segment per task label, with the registry's name, colour and SNOMED CT terminology, on the
reference volume's exact grid. Softmax tasks share one labelmap layer (label value = task value,
one copy of the voxels however many organs); the overlapping BraTS regions (TC inside WT) get a
layer each. The node is filled only once the result exists, so a cancelled or failed run leaves
the scene as it was.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import vtk
from vtk.util import numpy_support

from .volumes import (
    _to_numpy,
    ijk_to_world,
    image_to_volume_node,
    oriented_image,
    vtk_matrix,
)

__all__ = [
    "SegmentSpec",
    "brats_labelmap_node",
    "check_output_node",
    "labels_to_segmentation",
    "register_segmentation_logic",
    "segment_specs",
    "segmentation_logic",
    "segmentation_to_labels",
    "temporary_labelmap",
    "world_to_node",
]

_logics: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def segmentation_logic(scene):
    """Slicer's Segmentations module logic: the application's inside Slicer, else one made for
    ``scene`` (slicer-core, scripts), with its scene set as the logic requires."""
    import slicer

    modules = getattr(slicer, "modules", None)
    if modules is not None and hasattr(modules, "segmentations"):
        logic = modules.segmentations.logic()
        if logic.GetMRMLScene() is scene:
            return logic
    logic = _logics.get(scene)
    if logic is None:
        logic = slicer.vtkSlicerSegmentationsModuleLogic()
        logic.SetMRMLScene(scene)
        _logics[scene] = logic
    return logic


def register_segmentation_logic(scene, logic) -> None:
    """Use ``logic`` for ``scene`` (a headless setup's own), instead of making another one."""
    _logics[scene] = logic


@dataclass(frozen=True)
class SegmentSpec:
    """One segment: identity (name, colour, terminology entry) and where its voxels are
    (``layer``: the region channel or 0; ``value``: the label value in that layer)."""

    name: str
    color: tuple[float, float, float]
    terminology: str
    layer: int
    value: int


def segment_specs(task) -> list[SegmentSpec]:
    """Softmax: one segment per foreground label (value = label value, one layer). Sigmoid
    (BraTS): one segment per region (TC, WT, ET), each its own layer with value 1."""
    from segresmamba.io import terminology_entry

    if task.output == "sigmoid":
        return [
            SegmentSpec(label.name, label.color, terminology_entry(label.terminology), i, 1)
            for i, label in enumerate(task.labels)
        ]
    return [
        SegmentSpec(label.name, label.color, terminology_entry(label.terminology), 0, label.value)
        for label in task.foreground_labels
    ]


def _layers(labels: sitk.Image | np.ndarray, task) -> np.ndarray:
    """The engine output as (layer, k, j, i) uint8: one layer (softmax) or one per region."""
    array = sitk.GetArrayFromImage(labels) if isinstance(labels, sitk.Image) else labels
    array = np.asarray(array)
    if task.output == "sigmoid":
        if array.ndim != 4 or array.shape[-1] != len(task.labels):
            raise ValueError(
                f"task {task.name} needs {len(task.labels)} region masks, got an array of "
                f"shape {array.shape}"
            )
        return np.moveaxis(array, -1, 0).astype(np.uint8)
    if array.ndim != 3:
        raise ValueError(f"task {task.name} needs a 3D labelmap, got shape {array.shape}")
    return array[None].astype(np.uint8)


def labels_to_segmentation(
    scene, labels: sitk.Image | np.ndarray, task, reference_node, output_node=None, name=None
):
    """Put the engine's result for ``task`` into a segmentation node on ``reference_node``'s grid.

    ``labels`` is what ``segment()`` returns (uint8 labelmap, or the region masks for sigmoid
    tasks) or its array, voxel for voxel on the reference volume. ``output_node`` is replaced
    (its old segments removed); None creates a node called ``name``. The voxels are written in
    the output node's own frame, so one under a transform shows the result where the volume is,
    not transformed twice. The node gets display nodes and closed surfaces, so the result shows
    in the slice views and in 3D.
    """
    from segresmamba.tasks import get_task

    task = get_task(task)
    layers = _layers(labels, task)
    dims = reference_node.GetImageData().GetDimensions()
    if layers.shape[1:] != tuple(dims[::-1]):
        raise ValueError(
            f"the result has {layers.shape[:0:-1]} voxels but volume "
            f"{reference_node.GetName()!r} has {tuple(dims)}; it is not on the input's grid"
        )
    import slicer

    node = output_node or scene.AddNewNodeByClass(
        "vtkMRMLSegmentationNode", name or f"{reference_node.GetName()} {task.name}"
    )
    was_modifying = node.StartModify()
    try:
        # where the volume is shown, in the coordinates of the segmentation's own frame
        frame = world_to_node(node) @ ijk_to_world(reference_node)
        if reference_node.GetTransformNodeID() == node.GetTransformNodeID():
            node.SetReferenceImageGeometryParameterFromVolumeNode(reference_node)
        else:
            _set_reference_geometry(node, frame, dims)
        segmentation = node.GetSegmentation()
        segmentation.RemoveAllSegments()
        representation = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
        images = [oriented_image(layer, frame) for layer in layers]
        for spec in segment_specs(task):
            segment = slicer.vtkSegment()
            segment.SetName(spec.name)
            segment.SetColor(*spec.color)
            segment.SetLabelValue(spec.value)
            _set_terminology(segment, spec.terminology)
            # the registry chose them: a terminology edit must not rename or recolour them
            segment.SetNameAutoGenerated(False)
            segment.SetColorAutoGenerated(False)
            segment.AddRepresentation(representation, images[spec.layer])  # shared per layer
            segmentation.AddSegment(segment, spec.name)
    finally:
        node.EndModify(was_modifying)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    node.CreateClosedSurfaceRepresentation()
    return node


def world_to_node(node) -> np.ndarray:
    """The 4x4 world -> ``node``'s own frame matrix (identity without a parent transform)."""
    check_output_node(node)
    parent = node.GetParentTransformNode()
    if parent is None:
        return np.eye(4)
    matrix = vtk.vtkMatrix4x4()
    parent.GetMatrixTransformFromWorld(matrix)
    return _to_numpy(matrix)


def check_output_node(node) -> None:
    """A result cannot be written into a segmentation under a non-linear transform (its voxel
    grid would bend): ValueError says what to do, before a run is started."""
    parent = node.GetParentTransformNode() if node is not None else None
    if parent is not None and not parent.IsTransformToWorldLinear():
        raise ValueError(
            f"the output segmentation {node.GetName()!r} is under a non-linear transform; "
            "harden or remove it (Transforms module), or choose another output"
        )


def _set_terminology(segment, entry: str) -> None:
    if hasattr(segment, "SetTerminology"):  # Slicer 5.7 and later
        segment.SetTerminology(entry)
    else:
        segment.SetTag("TerminologyEntry", entry)


def _export_segment(scene, node, segment_id: str, reference_node, labelmap_node) -> np.ndarray:
    logic = segmentation_logic(scene)
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(segment_id)
    if not logic.ExportSegmentsToLabelmapNode(node, ids, labelmap_node, reference_node):
        raise RuntimeError(f"Slicer could not export segment {segment_id!r}")
    image_data = labelmap_node.GetImageData()
    voxels = numpy_support.vtk_to_numpy(image_data.GetPointData().GetScalars())
    return voxels.reshape(image_data.GetDimensions()[::-1]) != 0


@contextmanager
def temporary_labelmap(scene) -> Iterator:
    """A labelmap node for exports, removed afterwards with the colour table Slicer's exporter
    makes for it (``<segmentation>_ColorTable``), so no run leaves nodes behind."""
    labelmap_node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "export (temporary)")
    try:
        yield labelmap_node
    finally:
        display = labelmap_node.GetDisplayNode()
        colors = display.GetColorNode() if display is not None else None
        for node in (labelmap_node, display, labelmap_node.GetStorageNode()):
            if node is not None:
                scene.RemoveNode(node)
        if colors is not None and colors.GetAttribute("Category") == "Segmentations":
            scene.RemoveNode(colors)  # made by the export, used by nothing else


def segmentation_to_labels(scene, node, task, reference_node) -> np.ndarray:
    """Export the task's segments through Slicer's own exporter onto ``reference_node``'s grid:
    a (k, j, i) labelmap with the task's values (softmax), or (k, j, i, region) masks (sigmoid).

    The inverse of :func:`labels_to_segmentation`; used by tests and the self-test to compare
    with the engine's files voxel for voxel. Segments are found by the task's label names.
    """
    from segresmamba.tasks import get_task

    task = get_task(task)
    dims = reference_node.GetImageData().GetDimensions()
    with temporary_labelmap(scene) as labelmap_node:
        specs = segment_specs(task)
        segmentation = node.GetSegmentation()
        if task.output == "sigmoid":
            out = np.zeros((*dims[::-1], len(specs)), np.uint8)
        else:
            out = np.zeros(dims[::-1], np.uint8)
        for spec in specs:
            segment_id = segmentation.GetSegmentIdBySegmentName(spec.name)
            if not segment_id:
                raise ValueError(f"segmentation {node.GetName()!r} has no segment {spec.name!r}")
            mask = _export_segment(scene, node, segment_id, reference_node, labelmap_node)
            if task.output == "sigmoid":
                out[..., spec.layer] = mask
            else:
                out[mask] = spec.value
        return out


def _set_reference_geometry(node, ijk_to_ras: np.ndarray, dims) -> None:
    import slicer

    geometry = slicer.vtkOrientedImageData()
    geometry.SetExtent(0, dims[0] - 1, 0, dims[1] - 1, 0, dims[2] - 1)
    geometry.SetImageToWorldMatrix(vtk_matrix(ijk_to_ras))
    converter = slicer.vtkSegmentationConverter
    node.GetSegmentation().SetConversionParameter(
        converter.GetReferenceImageGeometryParameterName(),
        converter.SerializeImageGeometry(geometry),
    )


def brats_labelmap_node(scene, regions: sitk.Image | np.ndarray, task, reference_node, name: str):
    """The combined BraTS labelmap (1 necrotic core, 2 edema, 3 enhancing; BraTS 2023) as a
    labelmap volume with a colour table naming the labels, for users who save BraTS files."""
    from segresmamba.io.affine import set_grid
    from segresmamba.tasks import get_task

    task = get_task(task)
    labelmap = task.labelmap.from_regions(_layers(regions, task), "2023")
    image = set_grid(sitk.GetImageFromArray(labelmap), ijk_to_world(reference_node))
    node = image_to_volume_node(scene, image, name, labelmap=True)
    colors = scene.AddNewNodeByClass("vtkMRMLColorTableNode", f"{name} colours")
    colors.SetTypeToUser()
    colors.SetNumberOfColors(max(label.value for label in task.labelmap.labels) + 1)
    colors.SetColor(0, "background", 0.0, 0.0, 0.0, 0.0)
    for label in task.labelmap.labels:
        colors.SetColor(label.value, label.name, *label.color, 1.0)
    if node.GetDisplayNode() is not None:
        node.GetDisplayNode().SetAndObserveColorNodeID(colors.GetID())
    return node

"""What a run leaves in Slicer's scene, on real MRML (slicer-core) and the real CT: volumes are
freed once deleted, a result lands where its volume is shown whatever transforms the output
segmentation sits under, exports leave no colour tables behind, and segment names and colours
stay the registry's (issue 20, points 9, 11, 12, 13)."""

from __future__ import annotations

import gc

import numpy as np
import pytest
from helpers_segment import rotation

slicer = pytest.importorskip("slicer", reason="slicer-core (the test extra) is not installed")

import vtk  # noqa: E402

from segresmamba.tasks import get_task  # noqa: E402
from SegResMambaSlicerLib.headless import HeadlessSlicer, load_volume  # noqa: E402
from SegResMambaSlicerLib.logic import SegmentationJob  # noqa: E402
from SegResMambaSlicerLib.segmentation import (  # noqa: E402
    labels_to_segmentation,
    segmentation_to_labels,
)
from SegResMambaSlicerLib.teach import scene_label_source  # noqa: E402
from SegResMambaSlicerLib.volumes import ijk_to_world, network_input_volumes  # noqa: E402

TASK = get_task("phantom")  # softmax, five organs (values 1-5)


@pytest.fixture
def ct(shared_data):
    """A fresh scene holding the real small CT as Slicer's volumes logic loads it."""
    headless = HeadlessSlicer.create()
    node = load_volume(headless, shared_data / "ct-abdomen" / "example_ct_sm.nii.gz")
    return headless.scene, node


def phantom_labels(node) -> np.ndarray:
    """An asymmetric box per organ (value 1-5) on the volume's grid (k, j, i)."""
    dims = node.GetImageData().GetDimensions()
    labels = np.zeros(dims[::-1], np.uint8)
    for value in range(1, 6):
        k, j, i = 2 + 4 * value, 5 + 9 * value, 3 + 13 * value
        labels[k : k + 3, j : j + 2 + value, i : i + 4] = value
    return labels


def linear_transform(scene, angles, shift):
    matrix = np.eye(4)
    matrix[:3, :3] = rotation(angles)
    matrix[:3, 3] = shift
    node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    vtk_matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            vtk_matrix.SetElement(r, c, matrix[r, c])
    node.SetMatrixTransformToParent(vtk_matrix)
    return node


def to_world(node) -> np.ndarray:
    """The 4x4 matrix from ``node``'s own frame to world."""
    parent = node.GetParentTransformNode()
    if parent is None:
        return np.eye(4)
    matrix = vtk.vtkMatrix4x4()
    parent.GetMatrixTransformToWorld(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def segment_world_points(segmentation_node, name: str) -> np.ndarray:
    """World positions (sorted rows) of a segment's voxel centres, read from its binary
    labelmap and its node's parent transforms, independently of the module's code."""
    segmentation = segmentation_node.GetSegmentation()
    segment = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName(name))
    image = segment.GetRepresentation(
        slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    )
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    image_to_frame = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    extent = image.GetExtent()
    scalars = vtk.util.numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    dims = (extent[1] - extent[0] + 1, extent[3] - extent[2] + 1, extent[5] - extent[4] + 1)
    voxels = scalars.reshape(dims[::-1])
    value = segment.GetLabelValue()
    k, j, i = np.nonzero(voxels == value)
    ijk = np.stack([i + extent[0], j + extent[2], k + extent[4], np.ones_like(i)])
    points = (to_world(segmentation_node) @ image_to_frame @ ijk)[:3].T
    return points[np.lexsort(points.T[::-1])]


def label_world_points(volume_node, labels: np.ndarray, value: int) -> np.ndarray:
    k, j, i = np.nonzero(labels == value)
    ijk = np.stack([i, j, k, np.ones_like(i)])
    points = (ijk_to_world(volume_node) @ ijk)[:3].T
    return points[np.lexsort(points.T[::-1])]


def test_a_deleted_volume_is_freed_after_the_panel_listed_the_inputs(shared_data):
    """Point 9: the panel lists the input volumes on every NodeAddedEvent; the collection
    GetNodesByClass returns must be released, or every volume stays in memory for good."""
    headless = HeadlessSlicer.create()
    scene = headless.scene
    freed = []

    def watch(name, vtk_object):
        vtk_object.AddObserver(vtk.vtkCommand.DeleteEvent, lambda caller, event: freed.append(name))

    node = load_volume(headless, shared_data / "ct-abdomen" / "example_ct_sm.nii.gz")
    watch("node", node)
    watch("voxels", node.GetImageData())
    for _ in range(3):  # as on three NodeAddedEvents
        assert network_input_volumes(scene) == [node]
    helpers = [node.GetDisplayNode(), node.GetStorageNode()]  # deleted with it, as Data does
    for each in [node, *helpers]:
        scene.RemoveNode(each)
    del node, helpers, each
    gc.collect()
    assert set(freed) == {"node", "voxels"}, "the deleted volume is still held in memory"


@pytest.mark.parametrize("output_under", ["other transform", "volume's transform", "none"])
def test_the_result_lands_where_the_volume_is_shown_whatever_transform_the_output_has(
    ct, output_under
):
    """Point 11: a reused output segmentation under a transform gets its voxels in its own
    frame, so in world they coincide with the volume's (itself under another transform)."""
    scene, node = ct
    volume_transform = linear_transform(scene, (4.0, -9.0, 17.0), (12.5, -7.0, 30.0))
    node.SetAndObserveTransformNodeID(volume_transform.GetID())
    output = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "reused output")
    if output_under == "other transform":
        other = linear_transform(scene, (-21.0, 6.0, 3.0), (-40.0, 15.5, -8.0))
        output.SetAndObserveTransformNodeID(other.GetID())
    elif output_under == "volume's transform":
        output.SetAndObserveTransformNodeID(volume_transform.GetID())
    labels = phantom_labels(node)
    result = labels_to_segmentation(scene, labels, TASK, node, output_node=output)
    assert result is output
    for label in TASK.foreground_labels:
        expected = label_world_points(node, labels, label.value)
        found = segment_world_points(output, label.name)
        assert found.shape == expected.shape, label.name
        np.testing.assert_allclose(found, expected, atol=1e-4, err_msg=label.name)
    if output_under != "other transform":  # Slicer's exporter then resamples (rotation)
        # Slicer's own exporter (statistics, self-test) gives the labels back voxel for voxel
        assert np.array_equal(segmentation_to_labels(scene, output, TASK, node), labels)


def test_an_output_under_a_non_linear_transform_is_refused_before_the_run(ct):
    scene, node = ct
    bending = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "bending")
    output = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "bent output")
    output.SetAndObserveTransformNodeID(bending.GetID())
    assert not bending.IsTransformToWorldLinear()
    with pytest.raises(ValueError, match="'bent output' is under a non-linear transform"):
        SegmentationJob(scene, TASK, [node], output)  # no folder, no process yet


def color_tables(scene) -> list[str]:
    nodes = scene.GetNodesByClass("vtkMRMLColorTableNode")
    nodes.UnRegister(None)
    return sorted(nodes.GetItemAsObject(i).GetName() for i in range(nodes.GetNumberOfItems()))


def test_exports_leave_no_colour_table_or_other_node_behind(ct):
    """Point 12: each export (statistics, self-test, Add to training set) used to leave a
    ``<segmentation>_ColorTable`` node in the scene."""
    scene, node = ct
    segmentation = labels_to_segmentation(scene, phantom_labels(node), TASK, node, name="result")
    tables, count = color_tables(scene), scene.GetNumberOfNodes()
    for _ in range(2):  # two runs' statistics
        segmentation_to_labels(scene, segmentation, TASK, node)
        scene_label_source(scene, segmentation, node)  # Teach: Add to training set
    assert color_tables(scene) == tables
    assert scene.GetNumberOfNodes() == count


def test_segment_names_and_colours_are_not_flagged_auto_generated(ct, tmp_path):
    """Point 13: with the flags left on, a terminology edit renames "liver" from its codes;
    they must also survive saving the segmentation with Slicer's storage node."""
    scene, node = ct
    segmentation = labels_to_segmentation(scene, phantom_labels(node), TASK, node, name="result")
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(tmp_path / "result.seg.nrrd"))
    assert storage.WriteData(segmentation)
    loaded = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "loaded")
    assert storage.ReadData(loaded)
    for node_ in (segmentation, loaded):
        found = node_.GetSegmentation()
        segments = [found.GetNthSegment(i) for i in range(found.GetNumberOfSegments())]
        assert [s.GetName() for s in segments] == [label.name for label in TASK.foreground_labels]
        assert not any(s.GetNameAutoGenerated() for s in segments), node_.GetName()
        assert not any(s.GetColorAutoGenerated() for s in segments), node_.GetName()

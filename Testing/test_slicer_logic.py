"""The Slicer module's logic on real MRML (slicer-core): Slicer's scene, volume and segmentation
nodes, its segmentation logic and storage nodes, the real CT and BraTS scans, the engine's
command in real subprocesses, and a small real (untrained) SegResMamba checkpoint."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
from helpers_segment import rotation, tiny_checkpoint

slicer = pytest.importorskip("slicer", reason="slicer-core (the test extra) is not installed")

import vtk  # noqa: E402

from segresmamba.io import terminology_entry  # noqa: E402
from segresmamba.io.affine import affine_to_grid  # noqa: E402
from segresmamba.tasks import get_task  # noqa: E402
from SegResMambaSlicerLib.headless import HeadlessSlicer, load_volume  # noqa: E402
from SegResMambaSlicerLib.logic import SegmentationJob, segment_volumes  # noqa: E402
from SegResMambaSlicerLib.segmentation import (  # noqa: E402
    brats_labelmap_node,
    labels_to_segmentation,
    segmentation_logic,
    segmentation_to_labels,
)
from SegResMambaSlicerLib.selftest import check_phantom  # noqa: E402
from SegResMambaSlicerLib.tasks import match_volumes  # noqa: E402
from SegResMambaSlicerLib.volumes import (  # noqa: E402
    ijk_to_world,
    image_to_volume_node,
    volume_to_image,
    vtk_matrix,
)

THREADS = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
RUN = {"device": "cpu", "fast": True, "overlap": 0.0}  # 4 windows of 64^3 on the small CT


def oblique_flipped(matrix: np.ndarray) -> np.ndarray:
    """Rotate a few degrees about each axis, mirror the j axis, shift: an awkward grid."""
    turn = np.eye(4)
    turn[:3, :3] = rotation((7.0, -11.0, 23.0))
    result = turn @ matrix @ np.diag([1.0, -1.0, 1.0, 1.0])
    result[:3, 3] += (5.5, -3.25, 12.125)
    return result


def node_count(scene) -> int:
    return scene.GetNumberOfNodes()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return tiny_checkpoint(
        tmp_path_factory.mktemp("models") / "phantom-tiny.safetensors", "phantom"
    )


@pytest.fixture(scope="module")
def ct_case(shared_data, tiny_model, tmp_path_factory):
    """The real CT loaded by Slicer, given an oblique and mirrored IJK-to-RAS matrix, saved by
    Slicer's storage node and segmented by the engine's command in a real subprocess."""
    headless = HeadlessSlicer.create()
    node = load_volume(headless, shared_data / "ct-abdomen" / "example_ct_sm.nii.gz")
    node.SetIJKToRASMatrix(vtk_matrix(oblique_flipped(ijk_to_world(node))))
    folder = tmp_path_factory.mktemp("ct")
    storage = headless.scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(folder / "ct.nrrd"))
    assert storage.WriteData(node)
    command = [sys.executable, "-m", "segresmamba", "segment", "-t", "phantom", "-q"]
    command += ["-i", str(folder / "ct.nrrd"), "-o", str(folder / "cli.nrrd")]
    command += ["--model", str(tiny_model), "--device", "cpu", "--fast", "--overlap", "0"]
    subprocess.run(command, env=THREADS, check=True, timeout=600)
    cli = sitk.ReadImage(str(folder / "cli.nrrd"))
    return SimpleNamespace(headless=headless, scene=headless.scene, node=node, cli=cli)


def test_volume_node_geometry_oblique_flipped_and_transformed(shared_data):
    headless = HeadlessSlicer.create()
    path = shared_data / "ct-abdomen" / "example_ct_sm.nii.gz"
    node = load_volume(headless, path)
    original = sitk.ReadImage(str(path))
    image = volume_to_image(node)
    assert np.array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(original))
    np.testing.assert_allclose(image.GetOrigin(), original.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(image.GetDirection(), original.GetDirection(), atol=1e-6)

    matrix = oblique_flipped(ijk_to_world(node))
    node.SetIJKToRASMatrix(vtk_matrix(matrix))
    image = volume_to_image(node)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    assert np.linalg.det(direction) < 0  # mirrored, as set
    lps = np.diag([-1.0, -1.0, 1.0])
    np.testing.assert_allclose(lps @ matrix[:3, :3], direction * image.GetSpacing(), atol=1e-12)
    np.testing.assert_allclose(lps @ matrix[:3, 3], image.GetOrigin(), atol=1e-12)
    again = image_to_volume_node(headless.scene, image, "round trip")
    np.testing.assert_allclose(ijk_to_world(again), matrix, atol=1e-12)
    assert np.array_equal(
        sitk.GetArrayFromImage(volume_to_image(again)), sitk.GetArrayFromImage(image)
    )

    # a linear parent transform is where Slicer shows the volume: the engine must see it there
    shift = np.eye(4)
    shift[:3, :3] = rotation((0.0, 0.0, 30.0))
    shift[:3, 3] = (10.0, 20.0, -5.0)
    transform = headless.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    transform.SetMatrixTransformToParent(vtk_matrix(shift))
    node.SetAndObserveTransformNodeID(transform.GetID())
    np.testing.assert_allclose(ijk_to_world(node), shift @ matrix, atol=1e-12)
    labels = np.zeros(sitk.GetArrayViewFromImage(image).shape, np.uint8)
    labels[5:9, 40:60, 30:70] = 1
    segmentation = labels_to_segmentation(headless.scene, labels, "phantom", node)
    binary = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    voxels = segmentation.GetSegmentation().GetNthSegment(0).GetRepresentation(binary)
    found = vtk.vtkMatrix4x4()
    voxels.GetImageToWorldMatrix(found)
    found = np.array([[found.GetElement(r, c) for c in range(4)] for r in range(4)])
    np.testing.assert_allclose(found, shift @ matrix, atol=1e-9)

    bent = headless.scene.AddNewNodeByClass("vtkMRMLTransformNode")
    spline = vtk.vtkThinPlateSplineTransform()
    source, target = vtk.vtkPoints(), vtk.vtkPoints()
    for point in ((0, 0, 0), (100, 0, 0), (0, 100, 0), (0, 0, 100)):
        source.InsertNextPoint(point)
        target.InsertNextPoint(point[0] + 3, point[1], point[2] * 1.1)
    spline.SetSourceLandmarks(source)
    spline.SetTargetLandmarks(target)
    bent.SetAndObserveTransformToParent(spline)
    node.SetAndObserveTransformNodeID(bent.GetID())
    with pytest.raises(ValueError, match="non-linear transform; harden it"):
        volume_to_image(node)


def test_segments_equal_the_command_line_output_voxel_for_voxel(ct_case, tiny_model):
    scene, node, cli = ct_case.scene, ct_case.node, ct_case.cli
    task = get_task("phantom")
    expected = sitk.GetArrayFromImage(cli)
    assert len(np.unique(expected)) > 2, "an all-one-label result would prove nothing"
    spacing, origin, direction = affine_to_grid(ijk_to_world(node))
    np.testing.assert_allclose(cli.GetOrigin(), origin, atol=1e-9)
    np.testing.assert_allclose(cli.GetSpacing(), spacing, atol=1e-12)
    np.testing.assert_allclose(cli.GetDirection(), direction, atol=1e-12)

    segmentation = segment_volumes(scene, task, [node], model=tiny_model, **RUN)
    assert segmentation.GetName() == "example_ct_sm SegResMamba phantom"
    labels = segmentation_to_labels(scene, segmentation, task, node)
    assert np.array_equal(labels, expected)

    segments = segmentation.GetSegmentation()
    assert segments.GetNumberOfSegments() == len(task.foreground_labels)
    assert segments.GetNumberOfLayers() == 1  # one shared labelmap for all organs
    for i, label in enumerate(task.foreground_labels):
        segment = segments.GetNthSegment(i)
        assert segment.GetName() == label.name and segment.GetLabelValue() == label.value
        np.testing.assert_allclose(segment.GetColor(), label.color, atol=1e-6)
        assert segment.GetTerminology() == terminology_entry(label.terminology)
    closed = slicer.vtkSegmentationConverter.GetClosedSurfaceRepresentationName()
    assert segments.ContainsRepresentation(closed)  # shown as surfaces in 3D
    assert segmentation.GetDisplayNode() is not None


def test_seg_nrrd_written_by_slicer_reloads_names_colours_and_terminology(ct_case, tmp_path):
    scene, node = ct_case.scene, ct_case.node
    task = get_task("phantom")
    segmentation = labels_to_segmentation(scene, ct_case.cli, task, node, name="to save")
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(tmp_path / "result.seg.nrrd"))
    assert storage.WriteData(segmentation)
    reloaded = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "reloaded")
    reader = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    reader.SetFileName(str(tmp_path / "result.seg.nrrd"))
    assert reader.ReadData(reloaded)
    segments = reloaded.GetSegmentation()
    assert segments.GetNumberOfSegments() == len(task.foreground_labels)
    for i, label in enumerate(task.foreground_labels):
        segment = segments.GetNthSegment(i)
        assert segment.GetName() == label.name
        np.testing.assert_allclose(segment.GetColor(), label.color, atol=1e-6)
        entry = vtk.mutable("")
        assert segment.GetTag("TerminologyEntry", entry)
        assert str(entry) == terminology_entry(label.terminology)
    labels = segmentation_to_labels(scene, reloaded, task, node)
    assert np.array_equal(labels, sitk.GetArrayFromImage(ct_case.cli))


def test_job_runs_the_engine_in_a_child_and_imports_the_same_result(ct_case, tiny_model):
    scene, node = ct_case.scene, ct_case.node
    task = get_task("phantom")
    # The same threads as the command-line run: with another thread count torch's CPU kernels
    # may round differently, and a near-tie voxel of this random model can flip. (The core the
    # job leaves to Slicer is tested in test_threads.py.)
    same_threads = {**THREADS, "SEGRESMAMBA_RESERVE_CORES": "0"}
    job = SegmentationJob(
        scene,
        task,
        [node],
        model=str(tiny_model),
        python=sys.executable,
        environment=same_threads,
        **RUN,
    )
    before = node_count(scene)
    job.start()
    folder = job.folder
    assert sorted(p.name for p in folder.iterdir()) == ["CT.nrrd"]
    events = job.process.wait(timeout=600)
    assert node_count(scene) == before  # nothing touches the scene before finish()
    fractions = [e.progress.fraction for e in events if e.kind == "progress"]
    assert fractions and fractions == sorted(fractions) and fractions[-1] == 1.0
    assert {e.progress.stage for e in events if e.kind == "progress"} >= {"segmenting", "done"}
    result = job.finish()
    assert result is not None, job.error
    assert not folder.exists()
    labels = segmentation_to_labels(scene, result, task, node)
    assert np.array_equal(labels, sitk.GetArrayFromImage(ct_case.cli))


def test_cancel_kills_the_engine_and_leaves_the_scene_as_it_was(ct_case, tiny_model):
    scene, node = ct_case.scene, ct_case.node
    job = SegmentationJob(
        scene, "phantom", [node], model=str(tiny_model), python=sys.executable, environment=THREADS
    )  # full resolution: long enough to be caught running
    before = node_count(scene)
    job.start()
    folder, process = job.folder, job.process
    deadline = time.monotonic() + 300
    while not any(event.kind == "progress" for event in job.poll()):
        assert process.running and time.monotonic() < deadline, process.log
        time.sleep(0.05)
    job.cancel()
    assert process.wait(timeout=30)[-1].kind == "finished"
    assert job.finish() is None and "cancelled" in job.error
    assert node_count(scene) == before and not folder.exists()
    if sys.platform != "win32":
        with pytest.raises(ProcessLookupError):
            os.killpg(process._process.pid, 0)  # no member of its process group is left


def test_engine_error_shows_one_line_and_keeps_the_scene(ct_case, tmp_path):
    scene, node = ct_case.scene, ct_case.node
    missing = tmp_path / "nowhere.safetensors"
    job = SegmentationJob(scene, "phantom", [node], model=str(missing), python=sys.executable)
    before = node_count(scene)
    job.start()
    job.process.wait(timeout=300)
    assert job.finish() is None
    assert job.error == f"checkpoint file {missing} does not exist"
    assert job.process.returncode == 3 and node_count(scene) == before


def test_brats_volumes_in_shuffled_order_are_matched_by_name(shared_data, request):
    headless = HeadlessSlicer.create()
    headless.publish()  # as in Slicer: slicer.mrmlScene and slicer.modules are this scene's
    request.addfinalizer(headless.withdraw)
    assert segmentation_logic(headless.scene) is headless.segmentations
    folder = shared_data / "brats-gli-00001"
    files = ["t1n", "t1c", "t2w", "t2f"]
    random.Random(4).shuffle(files)
    nodes = [load_volume(headless, folder / f"{name}.nii.gz") for name in files]
    task = get_task("brats")
    matched = match_volumes(task, [n.GetName() for n in nodes])
    ordered = {spec: nodes[index].GetName() for spec, index in matched.items()}
    assert ordered == {"FLAIR": "t2f", "T1": "t1n", "T1Gd": "t1c", "T2": "t2w"}

    # the BraTS result: three overlapping regions, one layer each, plus the labelmap on request
    truth = sitk.ReadImage(str(folder / "seg-BraTS23_1.nii.gz"))
    masks = task.labelmap.to_regions(sitk.GetArrayFromImage(truth))  # (region, k, j, i)
    regions = np.moveaxis(masks, 0, -1).astype(np.uint8)
    reference = nodes[matched["FLAIR"]]
    segmentation = labels_to_segmentation(headless.scene, regions, task, reference)
    segments = segmentation.GetSegmentation()
    assert [segments.GetNthSegment(i).GetName() for i in range(3)] == [
        label.name for label in task.labels
    ]
    assert segments.GetNumberOfLayers() == 3
    assert np.array_equal(
        segmentation_to_labels(headless.scene, segmentation, task, reference), regions
    )
    labelmap = brats_labelmap_node(headless.scene, regions, task, reference, "BraTS labelmap")
    written = sitk.GetArrayFromImage(volume_to_image(labelmap))
    assert np.array_equal(written, sitk.GetArrayFromImage(truth))
    np.testing.assert_allclose(ijk_to_world(labelmap), ijk_to_world(reference), atol=1e-12)
    headless.withdraw()
    assert not hasattr(slicer, "mrmlScene")


def test_self_test_check_runs_through_the_logic(tiny_model):
    headless = HeadlessSlicer.create()
    result = check_phantom(headless.scene, tiny_model, min_dice=0.99, size=(64, 64, 32))
    assert result.segment_names == [l.name for l in get_task("phantom").foreground_labels]
    assert set(result.dice) == set(result.segment_names)
    # names, count and grid hold; only the accuracy of an untrained model falls short
    assert len(result.problems) == 1 and "is below 0.99" in result.problems[0]


def test_self_test_with_the_bundled_demo_model():
    from segresmamba.demo import demo_checkpoint

    # The demo model ships in the repository: its absence is a failure, not a skip.
    checkpoint = demo_checkpoint()
    result = check_phantom(HeadlessSlicer.create().scene, checkpoint, min_dice=0.9)
    assert result.ok, result.report()

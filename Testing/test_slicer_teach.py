"""*Add to training set* on real MRML (slicer-core): volumes loaded by Slicer's own storage,
segments exported by Slicer's segmentation logic, and the engine's one dataset writer.

The written label and channels must equal the segmentation and volumes voxel for voxel where
Slicer shows them: an oblique, mirrored volume, and NRRD volumes stored in LPS and in RAS
space with axes that are neither in order nor all positive, checked through the IJK-to-RAS
matrices and SimpleITK's physical points, not by array shape alone. Cases are crops of the
real BraTS 2013 scans in ../shared/data/brats2013-2ch (40x40x24 voxels).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nrrd
import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer", reason="slicer-core (the test extra) is not installed")

from segresmamba.datasets import CaseExistsError, DatasetError, check_cases, load_dataset  # noqa: E402
from segresmamba.io.affine import LPS_TO_RAS, itk_affine_ras  # noqa: E402
from segresmamba.io.seg_nrrd import terminology_entry  # noqa: E402
from segresmamba.phantom import rotation_matrix  # noqa: E402
from segresmamba.tasks import Code, Terminology  # noqa: E402
from SegResMambaSlicerLib.headless import HeadlessSlicer, load_volume  # noqa: E402
from SegResMambaSlicerLib.teach import add_scene_case, default_case_id  # noqa: E402
from SegResMambaSlicerLib.volumes import (  # noqa: E402
    array_from_volume,
    ijk_to_world,
    image_to_volume_node,
    oriented_image,
    vtk_matrix,
)

REPO = Path(__file__).resolve().parents[1]
TUMOUR = Code("SCT", "49755003", "Morphologically Altered Structure")
ENHANCING = Terminology(TUMOUR, Code("SCT", "108369006", "Neoplasm"), Code("SCT", "1", "Enhancing"))
SCRAMBLED = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
"""Voxel axes i, j, k along -z, +x, -y (LPS): a sagittal-like, partly mirrored grid."""


@pytest.fixture(scope="module")
def crop(shared_data: Path) -> dict[str, np.ndarray]:
    """Voxels (k, j, i) of a real case around its tumour: FLAIR, T1Gd and the manual label."""
    source = shared_data / "brats2013-2ch"
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(source / "labelsTr/BRATS13_001.nii.gz")))
    k, j, i = np.argwhere(label > 0).mean(axis=0).astype(int) - (12, 20, 20)
    box = (slice(k, k + 24), slice(j, j + 40), slice(i, i + 40))
    out = {"label": label[box].astype(np.uint8)}
    for channel, name in enumerate(("FLAIR", "T1Gd")):
        path = source / f"imagesTr/BRATS13_001_{channel:04d}.nii.gz"
        out[name] = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))[box]
    return out


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SEGRESMAMBA_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def paint(headless, volume, masks: dict[str, np.ndarray], entries: dict[str, str] | None = None):
    """A segmentation node with one segment per mask, drawn on ``volume``'s grid."""
    node = headless.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "corrected")
    node.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    for index, (name, mask) in enumerate(masks.items()):
        segment_id = node.GetSegmentation().AddEmptySegment("", name, (0.1 * index, 0.5, 0.9))
        if entries and name in entries:
            node.GetSegmentation().GetSegment(segment_id).SetTerminology(entries[name])
        image = oriented_image(mask.astype(np.uint8), ijk_to_world(volume))
        slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(image, node, segment_id)
    return node


def tumour_masks(label: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Overlapping segments (the tumour, then the enhancing part inside it) and the labelmap a
    new dataset must get from them: values in segment order, the later segment on top."""
    masks = {"tumour": label > 0, "enhancing tumour": label == 4}
    return masks, np.where(label == 4, 2, np.where(label > 0, 1, 0)).astype(np.uint8)


def oblique_case(headless, crop):
    """FLAIR on an oblique, mirrored grid; T1Gd replaced by a linear function of position on
    an axis-aligned 2 mm grid of its own, so resampling can be checked exactly."""
    image = sitk.GetImageFromArray(crop["FLAIR"])
    image.SetSpacing((1.0, 1.2, 1.5))
    flair = image_to_volume_node(headless.scene, image, "BRATS13 001 flair")
    turn = np.eye(4)
    turn[:3, :3] = rotation_matrix((7.0, -11.0, 23.0))
    matrix = turn @ ijk_to_world(flair) @ np.diag([1.0, -1.0, 1.0, 1.0])
    matrix[:3, 3] += (5.5, -3.25, 12.125)
    flair.SetIJKToRASMatrix(vtk_matrix(matrix))
    corners = np.array([matrix @ (i, j, k, 1.0) for i in (0, 39) for j in (0, 39) for k in (0, 23)])
    low, high = (
        LPS_TO_RAS[:3, :3] @ corners[:, :3].min(0),
        LPS_TO_RAS[:3, :3] @ corners[:, :3].max(0),
    )
    low, high = np.minimum(low, high) - 4.0, np.maximum(low, high) + 4.0  # LPS box, 4 mm more
    coarse = sitk.Image([int(n) for n in np.ceil((high - low) / 2.0) + 1], sitk.sitkFloat32)
    coarse.SetSpacing((2.0, 2.0, 2.0))
    coarse.SetOrigin(tuple(low))
    ras = np.stack(np.meshgrid(*[np.arange(n) for n in coarse.GetSize()], indexing="ij"), -1)
    ras = (ras * 2.0 + coarse.GetOrigin()) * (-1.0, -1.0, 1.0)  # LPS index grid -> RAS
    values = (ras @ GRADIENT + 7.0).transpose(2, 1, 0).astype(np.float32)
    field = sitk.GetImageFromArray(values)
    field.CopyInformation(coarse)
    t1gd = image_to_volume_node(headless.scene, field, "T1Gd field")
    return flair, t1gd


GRADIENT = np.array([0.75, -1.5, 2.25])
"""The T1Gd stand-in of the oblique case: 7 + GRADIENT . (R, A, S)."""


def write_nrrd(path: Path, voxels: np.ndarray, space: str) -> Path:
    """``voxels`` (k, j, i) as a NRRD in ``space`` with the SCRAMBLED axes, 1.1/0.9/1.3 mm."""
    lps = SCRAMBLED * (1.1, 0.9, 1.3)  # columns: the voxel axes in LPS
    origin = np.array([12.0, -30.5, 8.25])
    flip = np.diag([-1.0, -1.0, 1.0]) if space == "right-anterior-superior" else np.eye(3)
    header = {"space": space, "space directions": (flip @ lps).T, "space origin": flip @ origin}
    nrrd.write(str(path), np.ascontiguousarray(voxels.transpose(2, 1, 0)), header, index_order="F")
    return path


def written(folder: Path, case: str, channel: int | None = None) -> sitk.Image:
    name = (
        f"imagesTr/{case}_{channel:04d}.nii.gz"
        if channel is not None
        else f"labelsTr/{case}.nii.gz"
    )
    return sitk.ReadImage(str(folder / name))


def assert_on_node_grid(image: sitk.Image, node) -> None:
    """The file's IJK-to-RAS matrix is the node's (NIfTI keeps float32 precision)."""
    np.testing.assert_allclose(itk_affine_ras(image), ijk_to_world(node), atol=2e-4)


def test_an_oblique_case_is_written_where_slicer_shows_it(crop, home):
    headless = HeadlessSlicer.create()
    flair, t1gd = oblique_case(headless, crop)
    masks, expected = tumour_masks(crop["label"])
    entries = {"enhancing tumour": terminology_entry(ENHANCING)}
    segmentation = paint(headless, flair, masks, entries)
    added = add_scene_case(headless.scene, "glioma-own", [flair, t1gd], segmentation)
    assert added.case_id == "BRATS13_001_flair" == default_case_id(flair)
    assert added.dataset_dir == (home / "datasets" / "glioma-own").resolve()
    assert added.label_names == ("tumour", "enhancing tumour") and not added.ignore_written
    folder = added.dataset_dir
    label = written(folder, added.case_id)
    assert np.array_equal(sitk.GetArrayFromImage(label), expected)
    assert_on_node_grid(label, flair)
    first = written(folder, added.case_id, 0)
    assert np.array_equal(sitk.GetArrayFromImage(first), array_from_volume(flair))
    assert_on_node_grid(first, flair)
    second = written(folder, added.case_id, 1)
    assert_on_node_grid(second, flair)
    world = ijk_to_world(flair)
    rng = np.random.default_rng(0)
    for i, j, k in rng.integers(0, (40, 40, 24), size=(200, 3)).tolist():
        ras = (world @ (i, j, k, 1.0))[:3]
        assert second[i, j, k] == pytest.approx(ras @ GRADIENT + 7.0, abs=1e-3)
        lps = np.array(label.TransformIndexToPhysicalPoint((i, j, k)))
        np.testing.assert_allclose(lps, LPS_TO_RAS[:3, :3] @ ras, atol=2e-3)
    info = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    assert info["name"] == "glioma-own" and info["channel_names"] == {"0": "FLAIR", "1": "T1Gd"}
    assert info["labels"] == {"background": 0, "tumour": 1, "enhancing tumour": 2}
    assert info["terminology"]["enhancing tumour"] == ENHANCING.to_dict()
    assert info["colors"]["enhancing tumour"] == [0.1, 0.5, 0.9]


@pytest.mark.parametrize("space", ["left-posterior-superior", "right-anterior-superior"])
def test_lps_and_ras_volumes_and_partial_labels(crop, home, tmp_path, space):
    """NRRD volumes loaded by Slicer's storage: the written case lies on the grid ITK reads
    from the same file; with partial labels exactly the slices without a segment are ignore."""
    headless = HeadlessSlicer.create()
    files = [write_nrrd(tmp_path / f"{n}.nrrd", crop[n], space) for n in ("FLAIR", "T1Gd")]
    nodes = [load_volume(headless, path, path.stem) for path in files]
    edited = np.zeros(24, bool)
    edited[[6, 7, 12, 15]] = True
    assert all(crop["label"][k].any() for k in np.flatnonzero(edited))
    masks, expected = tumour_masks(np.where(edited[:, None, None], crop["label"], 0))
    segmentation = paint(headless, nodes[0], masks)
    added = add_scene_case(
        headless.scene, "glioma-own", nodes, segmentation, case_id="sag1", partial=True
    )
    assert added.ignore_written and added.ignored_slices == 20
    label = written(added.dataset_dir, "sag1")
    voxels = sitk.GetArrayFromImage(label)
    assert np.all(voxels[~edited] == 3)  # ignore: after tumour (1) and enhancing tumour (2)
    assert np.array_equal(voxels[edited], expected[edited])
    for channel, path in enumerate(files):
        source = sitk.ReadImage(str(path))
        image = written(added.dataset_dir, "sag1", channel)
        assert np.array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(source))
        for image_written in (image, label):
            np.testing.assert_allclose(image_written.GetOrigin(), source.GetOrigin(), atol=1e-4)
            np.testing.assert_allclose(image_written.GetSpacing(), source.GetSpacing(), atol=1e-5)
            np.testing.assert_allclose(
                image_written.GetDirection(), source.GetDirection(), atol=1e-6
            )
        assert_on_node_grid(image, nodes[channel])
    assert (
        json.loads((added.dataset_dir / "dataset.json").read_text(encoding="utf-8"))["labels"][
            "ignore"
        ]
        == 3
    )


def test_both_cases_make_a_dataset_that_training_plans(crop, home, tmp_path):
    headless = HeadlessSlicer.create()
    flair, t1gd = oblique_case(headless, crop)
    masks, _ = tumour_masks(crop["label"])
    add_scene_case(headless.scene, "glioma-own", [flair, t1gd], paint(headless, flair, masks))
    files = [
        write_nrrd(tmp_path / f"{n}.nrrd", crop[n], "left-posterior-superior")
        for n in ("FLAIR", "T1Gd")
    ]
    nodes = [load_volume(headless, path, f"second {path.stem}") for path in files]
    added = add_scene_case(headless.scene, "glioma-own", nodes, paint(headless, nodes[0], masks))
    assert added.cases == 2 and added.case_id == "second_FLAIR"
    dataset = load_dataset(added.dataset_dir)
    check_cases(dataset)
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'SegResMambaSlicer'}{os.pathsep}{REPO}"}
    plan = subprocess.run(
        [sys.executable, "-m", "training.plan", str(added.dataset_dir), "--out", str(tmp_path / "plan.json")],
        cwd=REPO, env=env, capture_output=True, encoding="utf-8", timeout=120,
    )  # fmt: skip
    assert plan.returncode == 0, plan.stderr


def test_a_seg_nrrd_saved_by_slicer_goes_through_the_command(crop, home, tmp_path):
    """Slicer's own file (cropped to the segments, overlapping segments in two layers) and its
    own volume files: the command writes the same label as the scene export."""
    headless = HeadlessSlicer.create()
    flair, t1gd = oblique_case(headless, crop)
    masks, expected = tumour_masks(crop["label"])
    segmentation = paint(headless, flair, masks)
    storage = headless.scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(tmp_path / "corrected.seg.nrrd"))
    storage.SetCropToMinimumExtent(True)
    assert storage.WriteData(segmentation)
    assert nrrd.read_header(str(tmp_path / "corrected.seg.nrrd"))["dimension"] == 4  # 2 layers
    for node, name in ((flair, "flair"), (t1gd, "t1ce")):
        volume_storage = headless.scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
        volume_storage.SetFileName(str(tmp_path / f"{name}.nrrd"))
        assert volume_storage.WriteData(node)
    result = subprocess.run(
        [sys.executable, "-m", "segresmamba", "dataset", "add", str(tmp_path / "data"),
         "--case", "c1", "-i", f"FLAIR={tmp_path}/flair.nrrd", "-i", f"T1Gd={tmp_path}/t1ce.nrrd",
         "--labels", str(tmp_path / "corrected.seg.nrrd")],
        capture_output=True, encoding="utf-8", timeout=120, env={**os.environ},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    label = written(tmp_path / "data", "c1")
    assert np.array_equal(sitk.GetArrayFromImage(label), expected)
    assert_on_node_grid(label, flair)


def test_same_case_is_replaced_only_on_request_and_unknown_segments_are_refused(crop, home):
    headless = HeadlessSlicer.create()
    flair, t1gd = oblique_case(headless, crop)
    masks, _ = tumour_masks(crop["label"])
    segmentation = paint(headless, flair, masks)
    first = add_scene_case(headless.scene, "glioma-own", [flair, t1gd], segmentation)
    with pytest.raises(CaseExistsError, match="exists already"):
        add_scene_case(headless.scene, "glioma-own", [flair, t1gd], segmentation)
    again = add_scene_case(headless.scene, "glioma-own", [flair, t1gd], segmentation, replace=True)
    assert again.replaced and again.cases == 1 and again.case_id == first.case_id
    # a built-in task: its own dataset (btcv-own) takes its labels; a segment it lacks is refused
    ct = image_to_volume_node(headless.scene, sitk.GetImageFromArray(crop["FLAIR"]), "ct")
    other = paint(headless, ct, {"Spleen": crop["label"] == 2, "My lesion": crop["label"] == 4})
    with pytest.raises(DatasetError, match="segment 'My lesion' is not a label of this dataset"):
        add_scene_case(headless.scene, "btcv", [ct], other)
    assert not (home / "datasets" / "btcv-own").exists()
    with pytest.raises(DatasetError, match="task btcv takes 1 image"):
        add_scene_case(headless.scene, "btcv", [ct, flair], other)


def test_a_volume_under_a_linear_transform_is_written_where_it_is_shown(crop, home):
    """The volume sits under a rotation and shift; the segments were drawn in world space
    (the segmentation itself is not transformed): the case is written in world space."""
    headless = HeadlessSlicer.create()
    flair = image_to_volume_node(headless.scene, sitk.GetImageFromArray(crop["FLAIR"]), "moved")
    shift = np.eye(4)
    shift[:3, :3] = rotation_matrix((0.0, 0.0, 30.0))
    shift[:3, 3] = (10.0, 20.0, -5.0)
    transform = headless.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    transform.SetMatrixTransformToParent(vtk_matrix(shift))
    flair.SetAndObserveTransformNodeID(transform.GetID())
    masks, expected = tumour_masks(crop["label"])
    segmentation = headless.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "world")
    for name, mask in masks.items():
        segment_id = segmentation.GetSegmentation().AddEmptySegment("", name)
        image = oriented_image(mask.astype(np.uint8), ijk_to_world(flair))  # world grid
        logic = slicer.vtkSlicerSegmentationsModuleLogic
        logic.SetBinaryLabelmapToSegment(image, segmentation, segment_id)
    added = add_scene_case(headless.scene, "glioma-flair", [flair], segmentation)
    label = written(added.dataset_dir, added.case_id)
    assert np.array_equal(sitk.GetArrayFromImage(label), expected)
    assert_on_node_grid(label, flair)
    assert np.allclose(ijk_to_world(flair)[:3, 3], shift[:3, 3])  # the transform counts

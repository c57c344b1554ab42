"""``segresmamba dataset add``: a case written into an nnU-Net v2 folder that the dataset
reader, ``training.plan`` and nnU-Net read, and every refusal as a real subprocess (exit 2,
one ``error:`` line, the folder byte for byte as before).

Cases are crops of the real BraTS 2013 scans in ../shared/data/brats2013-2ch (40x40x24 voxels
around the tumour, manual labels), so each command takes about a second.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers_owndata import dataset_add, snapshot

from segresmamba.datasets import add_case, check_cases, load_dataset
from segresmamba.io.seg_nrrd import Segment, terminology_entry, write_segmentation
from segresmamba.tasks import Code, Terminology

REPO = Path(__file__).resolve().parents[1]
CASES = ("BRATS13_001", "BRATS13_002")
TUMOUR = Code("SCT", "49755003", "Morphologically Altered Structure")
NAMES = ("necrosis", "edema", "non-enhancing tumour", "enhancing tumour")
CODES = (  # codes chosen for the test: each label a different type
    Terminology(TUMOUR, Code("SCT", "6574001", "Necrosis")),
    Terminology(TUMOUR, Code("SCT", "79654002", "Edema")),
    Terminology(TUMOUR, Code("SCT", "108369006", "Neoplasm")),
    Terminology(TUMOUR, Code("SCT", "108369006", "Neoplasm"), Code("SCT", "1", "Enhancing")),
)
COLOURS = ((0.9, 0.2, 0.1), (0.2, 0.8, 0.3), (0.1, 0.3, 0.9), (1.0, 0.85, 0.1))


def segments(names=NAMES, codes=CODES, values=(1, 2, 3, 4), layers=(0, 0, 0, 0)) -> list[Segment]:
    return [
        Segment(name, value, colour, terminology_entry(code) if code else "", layer)
        for name, value, colour, code, layer in zip(names, values, COLOURS, codes, layers)
    ]


@pytest.fixture(scope="module")
def crops(shared_data: Path, tmp_path_factory) -> Path:
    """Two real cases cropped around their tumours: ``<case>_flair``, ``<case>_t1ce``, the
    float label ``<case>_label`` and the same label as a ``.seg.nrrd`` with named segments."""
    source, out = shared_data / "brats2013-2ch", tmp_path_factory.mktemp("crops")
    for case in CASES:
        label = sitk.ReadImage(str(source / "labelsTr" / f"{case}.nii.gz"))
        centre = np.argwhere(sitk.GetArrayViewFromImage(label) > 0).mean(axis=0).astype(int)
        start = [int(v) for v in (centre - (12, 20, 20))[::-1]]

        def crop(image: sitk.Image, start=start) -> sitk.Image:
            return sitk.RegionOfInterest(image, [40, 40, 24], start)

        for channel, name in enumerate(("flair", "t1ce")):
            image = sitk.ReadImage(str(source / "imagesTr" / f"{case}_{channel:04d}.nii.gz"))
            sitk.WriteImage(crop(image), str(out / f"{case}_{name}.nii.gz"))
        sitk.WriteImage(crop(label), str(out / f"{case}_label.nii.gz"))
        write_segmentation(
            sitk.Cast(crop(label), sitk.sitkUInt8), out / f"{case}.seg.nrrd", segments()
        )
    return out


def voxels(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def assert_same_grid(a: sitk.Image, b: sitk.Image) -> None:
    """Same grid up to the float32 precision of NIfTI headers."""
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)


def first_case(crops: Path, folder: Path) -> None:
    images = {
        "FLAIR": crops / "BRATS13_001_flair.nii.gz",
        "T1Gd": crops / "BRATS13_001_t1ce.nii.gz",
    }
    add_case(folder, "c1", images, crops / "BRATS13_001.seg.nrrd")


def test_two_cases_make_a_dataset_that_the_reader_and_the_planner_take(crops, tmp_path):
    folder = tmp_path / "mine"
    first = dataset_add(
        folder, "--case", "c1", "-i", f"FLAIR={crops}/BRATS13_001_flair.nii.gz",
        "-i", f"T1Gd={crops}/BRATS13_001_t1ce.nii.gz", "--labels", crops / "BRATS13_001.seg.nrrd",
        cwd=tmp_path,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert "added case c1" in first.stdout and "holds 1 case(s)" in first.stdout
    # the second case: bare files in the wrong order (named by their file names), float labels
    second = dataset_add(
        folder, "--case", "c2", "-i", crops / "BRATS13_002_t1ce.nii.gz",
        "-i", crops / "BRATS13_002_flair.nii.gz", "--labels", crops / "BRATS13_002_label.nii.gz",
        cwd=tmp_path,
    )  # fmt: skip
    assert second.returncode == 0, second.stderr
    info = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    assert info["channel_names"] == {"0": "FLAIR", "1": "T1Gd"}
    assert info["labels"] == {"background": 0, **{n: i + 1 for i, n in enumerate(NAMES)}}
    assert info["numTraining"] == 2 and info["file_ending"] == ".nii.gz"
    assert info["name"] == "mine"
    assert info["colors"]["edema"] == list(COLOURS[1])
    assert info["terminology"]["enhancing tumour"] == CODES[3].to_dict()
    for case, index in (("c1", "001"), ("c2", "002")):
        label = sitk.ReadImage(str(folder / "labelsTr" / f"{case}.nii.gz"))
        source = sitk.ReadImage(str(crops / f"BRATS13_{index}_label.nii.gz"))
        assert label.GetPixelID() == sitk.sitkUInt8
        assert np.array_equal(sitk.GetArrayFromImage(label), sitk.GetArrayFromImage(source))
        assert_same_grid(label, source)
        for channel, name in enumerate(("flair", "t1ce")):
            written = folder / "imagesTr" / f"{case}_{channel:04d}.nii.gz"
            assert np.array_equal(voxels(written), voxels(crops / f"BRATS13_{index}_{name}.nii.gz"))
    dataset = load_dataset(folder)
    check_cases(dataset)
    assert [c.case_id for c in dataset.cases] == ["c1", "c2"]
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'SegResMambaSlicer'}{os.pathsep}{REPO}"}
    plan = subprocess.run(
        [sys.executable, "-m", "training.plan", str(folder), "--out", str(tmp_path / "plan.json")],
        cwd=REPO, env=env, capture_output=True, encoding="utf-8", timeout=120,
    )  # fmt: skip
    assert plan.returncode == 0, plan.stderr
    assert json.loads((tmp_path / "plan.json").read_text(encoding="utf-8"))["dataset"]["cases"] == [
        "c1",
        "c2",
    ]
    assert not list(folder.glob(".incoming-*")), "the staging folder must be gone"


def _write_refusal_inputs(crops: Path, work: Path) -> None:
    label = sitk.ReadImage(str(crops / "BRATS13_002_label.nii.gz"))
    empty = sitk.Image(label.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(label)
    write_segmentation(empty, work / "empty.seg.nrrd", segments())
    far = sitk.ReadImage(str(crops / "BRATS13_002_t1ce.nii.gz"))
    far.SetOrigin(tuple(o + 1000.0 for o in far.GetOrigin()))
    sitk.WriteImage(far, str(work / "far_t1ce.nii.gz"))
    far_label = sitk.Cast(label, sitk.sitkUInt8)
    far_label.SetOrigin(far.GetOrigin())
    sitk.WriteImage(far_label, str(work / "far_label.nii.gz"))
    renamed = ("necrosis", "oedema (peritumoral)", "non-enhancing tumour", "enhancing tumour")
    uncoded = (CODES[0], None, CODES[2], CODES[3])
    write_segmentation(
        sitk.Cast(label, sitk.sitkUInt8), work / "unknown.seg.nrrd", segments(renamed, uncoded)
    )
    seven = sitk.Cast(label, sitk.sitkUInt8)
    seven[5, 5, 5] = 7
    sitk.WriteImage(seven, str(work / "seven.nii.gz"))
    (work / "broken_flair.nii.gz").write_bytes(b"this is not an image")
    (work / "broken.seg.nrrd").write_bytes(b"NRRD0004\nnot really\n")


REFUSALS = {  # what differs from a good second case, and what the one error line says
    "empty segmentation": ({"labels": "{work}/empty.seg.nrrd"}, "empty segmentation"),
    "channel outside": (
        {"T1Gd": "{work}/far_t1ce.nii.gz", "labels": "{crops}/BRATS13_002_label.nii.gz"},
        "channel T1Gd and channel FLAIR do not overlap",
    ),
    "labels outside": ({"labels": "{work}/far_label.nii.gz"}, "far_label.nii.gz and the first"),
    "segment not in dataset": (
        {"labels": "{work}/unknown.seg.nrrd"},
        "segment 'oedema (peritumoral)' is not a label of this dataset",
    ),
    "value not in dataset": ({"labels": "{work}/seven.nii.gz"}, "hold value 7, which is no"),
    "channel count": ({"T1Gd": None}, "has 2 channel(s) (FLAIR, T1Gd); the case has 1 image"),
    "case exists": ({"case": "c1"}, "case c1 exists already"),
    "unreadable image": ({"FLAIR": "{work}/broken_flair.nii.gz"}, "broken_flair.nii.gz"),
    "unreadable labels": ({"labels": "{work}/broken.seg.nrrd"}, "cannot read"),
    "unsafe case id": ({"case": "../c9"}, "case id '../c9' cannot name files"),
    "channel named wrong": (
        {"T1Gd": None, "T2": "{crops}/BRATS13_002_t1ce.nii.gz"},
        "'T2' is not a channel",
    ),
}


@pytest.fixture(scope="module")
def base(crops, tmp_path_factory) -> Path:
    """A dataset holding case c1, and the broken inputs of the refusals beside it."""
    work = tmp_path_factory.mktemp("refusals")
    first_case(crops, work / "data")
    _write_refusal_inputs(crops, work)
    return work


@pytest.mark.parametrize("problem", sorted(REFUSALS))
def test_each_refusal_is_one_line_and_leaves_the_folder_as_it_was(problem, base, crops, tmp_path):
    folder = tmp_path / "data"
    shutil.copytree(base / "data", folder)
    changes, expected = REFUSALS[problem]
    args = {
        "case": "c2",
        "labels": "{crops}/BRATS13_002.seg.nrrd",
        "FLAIR": "{crops}/BRATS13_002_flair.nii.gz",
        "T1Gd": "{crops}/BRATS13_002_t1ce.nii.gz",
        **changes,
    }
    args = {k: v.format(work=base, crops=crops) for k, v in args.items() if v is not None}
    command = [folder, "--case", args.pop("case"), "--labels", args.pop("labels")]
    for name, path in args.items():
        command += ["-i", f"{name}={path}"]
    before = snapshot(folder)
    result = dataset_add(*command, cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if not line.startswith("note: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expected in lines[0], lines[0]
    assert "Traceback" not in result.stderr and not result.stdout
    assert snapshot(folder) == before


def test_a_new_dataset_refuses_a_plain_labelmap_without_a_task(crops, tmp_path):
    result = dataset_add(
        tmp_path / "new", "--case", "c1", "-i", f"FLAIR={crops}/BRATS13_001_flair.nii.gz",
        "-i", f"T1Gd={crops}/BRATS13_001_t1ce.nii.gz",
        "--labels", crops / "BRATS13_001_label.nii.gz", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith("error: labels BRATS13_001_label.nii.gz are a plain labelmap")
    assert len(result.stderr.splitlines()) == 1 and not (tmp_path / "new").exists()
    unnamed = dataset_add(
        tmp_path / "new", "--case", "c1", "-i", crops / "BRATS13_001_flair.nii.gz",
        "-i", crops / "BRATS13_001_t1ce.nii.gz", "--labels", crops / "BRATS13_001.seg.nrrd",
        cwd=tmp_path,
    )  # fmt: skip
    assert unnamed.returncode == 2 and "name each image's channel" in unnamed.stderr
    assert not (tmp_path / "new").exists()


def test_replace_needs_the_flag_and_then_replaces_the_case(base, crops, tmp_path):
    folder = tmp_path / "data"
    shutil.copytree(base / "data", folder)
    command = [
        folder, "--case", "c1", "-i", f"FLAIR={crops}/BRATS13_002_flair.nii.gz",
        "-i", f"T1Gd={crops}/BRATS13_002_t1ce.nii.gz", "--labels", crops / "BRATS13_002.seg.nrrd",
    ]  # fmt: skip
    assert dataset_add(*command, cwd=tmp_path).returncode == 2
    result = dataset_add(*command, "--replace", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "replaced case c1" in result.stdout and "holds 1 case(s)" in result.stdout
    written = voxels(folder / "labelsTr" / "c1.nii.gz")
    assert np.array_equal(written, voxels(crops / "BRATS13_002_label.nii.gz"))
    assert json.loads((folder / "dataset.json").read_text(encoding="utf-8"))["numTraining"] == 1


def test_partial_labels_make_the_unlabelled_slices_ignore(crops, tmp_path):
    label = sitk.Cast(sitk.ReadImage(str(crops / "BRATS13_002_label.nii.gz")), sitk.sitkUInt8)
    array = sitk.GetArrayFromImage(label)
    edited = np.zeros(len(array), bool)
    edited[[3, 4, 10, 17]] = True  # the slices the user corrected (third voxel axis)
    assert all(array[k].any() for k in np.flatnonzero(edited))
    array[~edited] = 0
    partial = sitk.GetImageFromArray(array)
    partial.CopyInformation(label)
    write_segmentation(partial, tmp_path / "partial.seg.nrrd", segments())
    folder = tmp_path / "data"
    first_case(crops, folder)
    images = {
        "T1Gd": crops / "BRATS13_002_t1ce.nii.gz",
        "FLAIR": crops / "BRATS13_002_flair.nii.gz",
    }
    added = add_case(folder, "c2", images, tmp_path / "partial.seg.nrrd", partial=True)
    assert added.ignore_written and added.ignored_slices == len(array) - 4
    info = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    assert info["labels"]["ignore"] == 5  # the highest value, after the four labels
    written = voxels(folder / "labelsTr" / "c2.nii.gz")
    assert np.all(written[~edited] == 5)
    assert np.array_equal(written[edited], array[edited])
    dataset = load_dataset(folder)
    assert dataset.ignore_value == 5 and "ignore" not in dataset.labels
    check_cases(dataset)
    # without --partial the same labels teach background on the other slices
    again = add_case(folder, "c3", images, tmp_path / "partial.seg.nrrd")
    assert not again.ignore_written and not np.any(voxels(folder / "labelsTr" / "c3.nii.gz") == 5)


def _oblique(image: sitk.Image, spacing: float, shift: float, angle: float) -> sitk.Image:
    """An empty grid of ``spacing`` mm, turned by ``angle`` degrees about z and mirrored in y,
    centred ``shift`` mm from ``image``'s centre and reaching a little beyond it."""
    c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    direction = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ np.diag([1.0, -1.0, 1.0])
    extent = np.array(image.GetSize()) * np.array(image.GetSpacing())
    size = [int(n) for n in np.ceil(extent / spacing) + 4]
    centre = image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()])
    out = sitk.Image(size, sitk.sitkFloat32)
    out.SetSpacing((spacing,) * 3)
    out.SetDirection(tuple(direction.ravel()))
    half = direction @ (spacing * (np.array(size) - 1) / 2)
    out.SetOrigin(tuple(np.array(centre) + shift - half))
    return out


def test_other_grids_are_resampled_in_physical_space(crops, tmp_path):
    """A second channel on a coarser, rotated and mirrored grid holding a linear function of
    position: linear resampling must give that function at each written voxel's position. A
    label on another grid: each voxel takes the label of the nearest label voxel."""
    first = sitk.ReadImage(str(crops / "BRATS13_001_flair.nii.gz"))
    second = _oblique(first, 1.7, -6.0, 20.0)
    gradient = np.array([0.5, -1.25, 2.0])
    field = lambda points: points @ gradient + 3.0  # noqa: E731
    index = np.stack(np.meshgrid(*[np.arange(n) for n in second.GetSize()], indexing="ij"), -1)
    points = np.array(
        [second.TransformIndexToPhysicalPoint([int(v) for v in i]) for i in index.reshape(-1, 3)]
    )
    values = field(points).reshape(index.shape[:3]).transpose(2, 1, 0).astype(np.float32)
    second_image = sitk.GetImageFromArray(values)
    second_image.CopyInformation(second)
    label_grid = _oblique(first, 0.8, 3.0, -35.0)
    rng = np.random.default_rng(0)
    label_array = (rng.random(sitk.GetArrayViewFromImage(label_grid).shape) < 0.3).astype(np.uint8)
    label = sitk.GetImageFromArray(label_array * 2)
    label.CopyInformation(label_grid)
    sitk.WriteImage(label, str(tmp_path / "label.nrrd"))
    folder = tmp_path / "data"
    first_case(crops, folder)  # labels necrosis .. enhancing tumour: value 2 is edema
    images = {"FLAIR": first, "T1Gd": second_image}
    added = add_case(folder, "moved", images, tmp_path / "label.nrrd")
    assert added.label_names == ("edema",)
    written = sitk.ReadImage(str(folder / "imagesTr" / "moved_0001.nii.gz"))
    written_label = sitk.ReadImage(str(folder / "labelsTr" / "moved.nii.gz"))
    assert_same_grid(written, first)
    assert_same_grid(written_label, first)
    inside = near = 0
    for i, j, k in rng.integers(0, first.GetSize(), size=(300, 3)).tolist():
        point = first.TransformIndexToPhysicalPoint((i, j, k))
        where = np.array(second.TransformPhysicalPointToContinuousIndex(point))
        if np.all(where >= 0) and np.all(where <= np.array(second.GetSize()) - 1):
            inside += 1
            assert written[i, j, k] == pytest.approx(field(np.array(point)), abs=1e-3)
        nearest = np.round(label.TransformPhysicalPointToContinuousIndex(point)).astype(int)
        if np.all(nearest >= 0) and np.all(nearest < label.GetSize()):
            near += 1
            assert written_label[i, j, k] == label[[int(v) for v in nearest]]
    assert inside > 200 and near > 200

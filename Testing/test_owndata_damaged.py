"""Damaged or unusual datasets on the own-data path (issue 20, section D): each is refused by the
real command in one line with the documented exit code, before anything is written, or handled.

Datasets are copies of real BraTS 2013 cases (../shared/data/brats2013-2ch) at 6 mm, damaged by
the test: NaN voxels in MHA and NRRD images, a NaN in a label, a wrong ``numTraining``, regions
that lose a label, a built-in task's name; plus the model import's refusals (NaN weights, a task's
name for another task's model, a home that cannot be written).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from helpers_owndata import (
    OWN_TASK,
    coarse_cases,
    one_error_line,
    own_checkpoint,
    partly_labelled,
    run_cli,
    snapshot,
    with_array,
    write_dataset,
)

from segresmamba.datasets import load_dataset
from segresmamba.errors import EXIT_MODEL, EXIT_USAGE
from segresmamba.network import SegResMamba
from segresmamba.tasks import task_from_dict
from segresmamba.weights import make_header, read_header, save_checkpoint
from training.fingerprint import fingerprint
from training.plan import make_plan

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "SegResMambaSlicer/segresmamba/weights/demo/phantom-demo.safetensors"


def run_module(*args, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """``python -m ARGS`` (training.plan, training.train) as a user runs it, output as UTF-8."""
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO / 'SegResMambaSlicer'}{os.pathsep}{REPO}",
        "PYTHONWARNINGS": "ignore",
    }
    return subprocess.run(
        [sys.executable, "-m", *map(str, args)], cwd=cwd, env=env, capture_output=True,
        encoding="utf-8", errors="replace", timeout=600,
    )  # fmt: skip


@pytest.fixture(scope="module")
def brats(shared_data: Path) -> Path:
    return shared_data / "brats2013-2ch"


@pytest.fixture(scope="module")
def two(brats: Path) -> dict:
    """Two real cases at 6 mm: (channels, float label)."""
    return coarse_cases(brats, ("BRATS13_001", "BRATS13_002"))


def _poison(path: Path, value: float, voxels: int = 3) -> None:
    """Write ``value`` into a few voxels of the float image at ``path``, in its own format."""
    image = sitk.Cast(sitk.ReadImage(str(path)), sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(image)
    array.reshape(-1)[array.size // 2 : array.size // 2 + voxels] = value
    sitk.WriteImage(with_array(image, array), str(path))


@pytest.mark.parametrize("ending", [".mha", ".nrrd"])
def test_a_nan_image_is_refused_by_the_plan(ending: str, tmp_path: Path, two, brats) -> None:
    folder = write_dataset(tmp_path / "data", two, brats, ending)
    _poison(folder / f"imagesTr/BRATS13_002_0001{ending}", np.nan)
    out = tmp_path / "plan.json"
    result = run_module("training.plan", folder, "--out", out, "--spacing", 6)
    one_error_line(result, EXIT_USAGE, "case BRATS13_002", f"BRATS13_002_0001{ending}", "NaN")
    assert not out.exists()


def test_training_refuses_an_infinite_image_before_writing(tmp_path: Path, two, brats) -> None:
    folder = write_dataset(tmp_path / "data", two, brats, ".nrrd")
    _poison(folder / "imagesTr/BRATS13_001_0000.nrrd", np.inf, voxels=1)
    out = tmp_path / "run"
    result = run_module("training.train", "--dataset", folder, "--out", out, "--max-steps", 1)
    one_error_line(result, EXIT_USAGE, "case BRATS13_001: channel 0", "1 non-finite voxel")
    assert not out.exists()


def test_a_nan_in_a_label_is_one_line(tmp_path: Path, two, brats) -> None:
    folder = write_dataset(tmp_path / "data", two, brats, ".nrrd")
    _poison(folder / "labelsTr/BRATS13_002.nrrd", np.nan)
    result = run_module("training.plan", folder, "--out", tmp_path / "plan.json")
    one_error_line(result, EXIT_USAGE, "case BRATS13_002: label BRATS13_002.nrrd", "non-finite")


def test_num_training_that_disagrees_with_the_files_is_said(tmp_path: Path, two, brats) -> None:
    folder = write_dataset(tmp_path / "data", two, brats)
    meta = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    (folder / "dataset.json").write_text(json.dumps(meta | {"numTraining": 3}), encoding="utf-8")
    result = run_module("training.plan", folder, "--out", tmp_path / "plan.json", "--spacing", 6)
    assert result.returncode == 0, result.stderr  # said, not refused: training uses what it finds
    warning = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warning) == 1 and "'numTraining' is 3" in warning[0], result.stderr
    assert "hold 2 case(s); training uses the 2 found" in warning[0]


def test_regions_that_lose_a_label_are_named_as_dataset_json_names_them(
    tmp_path: Path, two, brats
) -> None:
    regions = {
        "background": 0,
        "whole tumour": [1, 2, 3, 4],
        "tumour core": [1, 3, 4],
        "necrosis": [1],
        "enhancing tumour": [4],
    }
    folder = write_dataset(
        tmp_path / "data", two, brats, labels=regions, regions_class_order=[1, 2, 3, 4]
    )
    result = run_module("training.plan", folder, "--out", tmp_path / "plan.json")
    line = one_error_line(result, EXIT_USAGE, "'regions_class_order' loses label value 1")
    assert "'whole tumour', 'tumour core', 'necrosis'" in line and "paints 3" in line
    assert "WholeTumour" not in line


@pytest.mark.parametrize("how", ["--name", "dataset.json"])
def test_a_built_in_task_name_is_refused_when_planning(how, tmp_path: Path, two, brats) -> None:
    changes = {"name": "btcv"} if how == "dataset.json" else {}
    folder = write_dataset(tmp_path / "data", two, brats, **changes)
    name = ["--name", "spleen"] if how == "--name" else []
    out = tmp_path / "plan.json"
    result = run_module("training.plan", folder, "--out", out, "--spacing", 6, *name)
    one_error_line(result, EXIT_USAGE, "is a built-in task's", "--name")
    assert not out.exists()


def test_training_refuses_a_plan_edited_to_a_built_in_name(tmp_path: Path, two, brats) -> None:
    folder = write_dataset(tmp_path / "data", two, brats)
    plan = make_plan(load_dataset(folder), spacing_mm=6.0)
    plan["task"]["name"] = "brats"
    (tmp_path / "plan.json").write_text(json.dumps(plan), encoding="utf-8")
    out = tmp_path / "run"
    result = run_module(
        "training.train", "--dataset", folder, "--plan", tmp_path / "plan.json", "--out", out
    )
    one_error_line(result, EXIT_USAGE, "task name 'brats'", "built-in")
    assert not out.exists()


@pytest.mark.parametrize("where", ["a folder", "under a file"])
def test_a_plan_that_cannot_be_written_leaves_nothing(where, tmp_path: Path, two, brats) -> None:
    # tests may run as root, who writes into read-only folders: a path under a regular file is
    # unwritable for everyone
    folder = write_dataset(tmp_path / "data", two, brats)
    place = tmp_path / "place"
    place.mkdir()
    (place / "file").write_text("x", encoding="utf-8")
    out = place if where == "a folder" else place / "file" / "plan.json"
    before = snapshot(tmp_path)
    result = run_module("training.plan", folder, "--out", out, "--spacing", 6)
    one_error_line(result, EXIT_USAGE, str(out))
    assert snapshot(tmp_path) == before  # no stray temporary file


def test_the_fingerprint_leaves_ignored_voxels_out_of_the_intensities(
    tmp_path: Path, two, brats
) -> None:
    """Voxels labelled ``ignore`` hold 10^4 in the image: no statistic may see them."""
    labels = {"background": 0, "necrosis": 1, "edema": 2, "non-enhancing tumour": 3}
    labels |= {"enhancing tumour": 4, "ignore": 5}
    cases = {}
    for case, (images, label) in two.items():
        partial = partly_labelled(label, range(12, 16), 5)
        ignored = sitk.GetArrayFromImage(partial) == 5
        bright = []
        for image in images:
            array = sitk.GetArrayFromImage(image)
            array[ignored] = 1e4
            bright.append(with_array(image, array))
        cases[case] = (bright, partial)
    dataset = load_dataset(write_dataset(tmp_path / "data", cases, brats, labels=labels))
    found = fingerprint(dataset)
    for channel in found["channels"]:
        assert channel["samples"] > 0 and channel["max"] < 1e4, channel
    assert 0 < found["ignored_voxel_share"] < 1


def test_nnunet_file_names_pick_the_channels_of_a_planned_task(tmp_path, two, brats) -> None:
    """Channels called FLAIR and T1Gd; files named as nnU-Net names them (CASE_0000, _0001)."""
    task = task_from_dict(
        make_plan(load_dataset(write_dataset(tmp_path / "d", two, brats)))["task"]
    )
    flair, t1gd = task.inputs
    assert flair.matches("BRATS13_005_0000.nii.gz") and not flair.matches("BRATS13_005_0001.nrrd")
    assert t1gd.matches("brats13_005_0001.nrrd") and not t1gd.matches("BRATS13_005_0000.nii.gz")
    assert t1gd.matches("case_t1ce.nii.gz") and not flair.matches("case_t1ce_0000.nii.gz")
    assert task.fast_spacing_mm == task.spacing_mm  # --fast runs where the model was trained


def _nan_checkpoint(path: Path, brats: Path) -> Path:
    own = own_checkpoint(path.with_name("good.safetensors"), brats)
    header = read_header(own)
    task = task_from_dict(header["task_definition"])
    model = SegResMamba(task.in_channels, task.out_channels, widths=(8, 16, 32, 64))
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    widths = {"widths": [8, 16, 32, 64]}
    return save_checkpoint(path, model, make_header(task, widths, header["provenance"]))


def test_a_checkpoint_with_nan_weights_is_never_imported(tmp_path: Path, brats: Path) -> None:
    checkpoint = _nan_checkpoint(tmp_path / "diverged.safetensors", brats)
    home = tmp_path / "home"
    result = run_cli("models", "import", checkpoint, home=home, cwd=tmp_path)
    one_error_line(result, EXIT_MODEL, "diverged.safetensors", "non-finite weights")
    assert not any((home / "models").glob("*.safetensors"))
    assert OWN_TASK not in run_cli("models", "list", home=home, cwd=tmp_path).stdout


def test_a_task_name_is_no_model_name_for_another_task(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = run_cli("models", "import", DEMO, "--name", "btcv", home=home, cwd=tmp_path)
    one_error_line(result, EXIT_MODEL, "'btcv'", "task btcv", "for task phantom")
    assert "btcv  task=phantom" not in run_cli("models", "list", home=home, cwd=tmp_path).stdout


def test_an_unwritable_home_is_one_line(tmp_path: Path, brats: Path) -> None:
    # root ignores read-only modes: a home under a regular file cannot be written by anyone
    (tmp_path / "file").write_text("x", encoding="utf-8")
    checkpoint = own_checkpoint(tmp_path / "own.safetensors", brats)
    result = run_cli("models", "import", checkpoint, home=tmp_path / "file/home", cwd=tmp_path)
    one_error_line(result, EXIT_USAGE, "cannot import own.safetensors", "Not a directory")

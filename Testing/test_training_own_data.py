"""Training on a user's own nnU-Net v2 dataset: reader, refusals, plan, and a short real run.

Everything runs on the real BraTS 2013 cases in ../shared/data/brats2013-2ch (two channels,
float labels 0-4); variants (region-based labels, MHA files, broken cases) are written by the
tests from those cases, resampled to 6 mm so the whole file stays quick on two cores.
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
from helpers_owndata import COARSE_MM
from helpers_owndata import coarse_cases as read_coarse_cases
from helpers_owndata import write_dataset as write_owndata

from segresmamba.datasets import EXIT_DATASET, check_cases, load_dataset
from segresmamba.inference.preprocess import normalize_intensity
from segresmamba.tasks import task_from_dict
from segresmamba.weights import read_header
from training.plan import make_plan, read_plan
from training.splits import brats_folds
from training.transforms import deterministic_transforms

REPO = Path(__file__).resolve().parents[1]
BRATS = REPO.parent / "shared/data/brats2013-2ch"


@pytest.fixture(scope="module")
def brats(shared_data: Path) -> Path:
    folder = shared_data / "brats2013-2ch"
    assert (folder / "dataset.json").is_file(), f"missing {folder}"
    return folder


@pytest.fixture(scope="module")
def coarse_cases(brats: Path) -> dict[str, tuple[list[sitk.Image], sitk.Image]]:
    """Three real cases at 6 mm (channels, float label), read once."""
    return read_coarse_cases(brats)


def write_dataset(folder: Path, cases: dict, ending: str = ".nii.gz", **changes) -> Path:
    """An nnU-Net v2 folder from (channels, label) images; ``changes`` edit dataset.json."""
    return write_owndata(folder, cases, BRATS, ending, **changes)


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'SegResMambaSlicer'}{os.pathsep}{REPO}"}
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, encoding="utf-8",
        timeout=600,
    )  # fmt: skip


def test_loader_reads_the_real_dataset(brats: Path) -> None:
    dataset = load_dataset(brats)
    assert dataset.channel_names == ("FLAIR", "T1Gd")
    assert [c.case_id for c in dataset.cases] == [f"BRATS13_00{i}" for i in range(1, 6)]
    assert dataset.labels["enhancing tumour"] == 4 and not dataset.region_based
    label = sitk.ReadImage(str(dataset.cases[0].label))
    assert label.GetPixelID() == sitk.sitkFloat32  # float labels with integral values pass
    check_cases(dataset)


def test_region_based_variant_becomes_a_sigmoid_task(tmp_path: Path, coarse_cases) -> None:
    regions = {
        "background": 0,
        "whole tumour": [1, 2, 3, 4],
        "tumour core": [1, 3, 4],
        "necrosis": [1],
        "enhancing tumour": [4],
    }
    folder = write_dataset(
        tmp_path / "regions", coarse_cases, labels=regions, regions_class_order=[2, 3, 1, 4]
    )
    dataset = load_dataset(folder)
    assert dataset.region_based and dataset.regions_class_order == (2, 3, 1, 4)
    check_cases(dataset)
    plan = make_plan(dataset, spacing_mm=COARSE_MM)
    task = task_from_dict(plan["task"])
    assert task.output == "sigmoid"
    assert [label.abbreviation for label in task.labels] == [
        "WholeTumour",
        "TumourCore",
        "Necrosis",
        "EnhancingTumour",
    ]
    assert task.labelmap.regions["TumourCore"] == (1, 3, 4)
    item = dataset.cases[0].as_entry()
    for transform in deterministic_transforms(task, crop_foreground=False, own_data=True):
        item = transform(item)
    label = torch.as_tensor(item["label"])
    assert item["image"].shape[0] == 2 and label.shape[0] == 4
    assert label[0].sum() > 0  # whole tumour present
    assert torch.equal(label[1] > 0, (label[1] > 0) & (label[0] > 0))  # core inside whole
    truth = sitk.GetArrayFromImage(coarse_cases["BRATS13_001"][1])
    assert int(label[0].sum()) == int((truth > 0).sum())  # same grid (6 mm): voxel for voxel
    painted = task.labelmap.from_regions(label.numpy() > 0.5)
    assert sorted(np.unique(painted)) == sorted(np.unique(truth).astype(int))


def _drop(folder: Path, name: str) -> None:
    (folder / name).unlink()


def _relabel(value: float):
    def change(folder: Path) -> None:
        path = folder / "labelsTr/BRATS13_002.nii.gz"
        label = sitk.ReadImage(str(path))
        array = sitk.GetArrayFromImage(label)
        array[array == 2] = value
        out = sitk.GetImageFromArray(array)
        out.CopyInformation(label)
        sitk.WriteImage(out, str(path))

    return change


def _regrid(what: str):
    def change(folder: Path) -> None:
        path = folder / "imagesTr/BRATS13_002_0001.nii.gz"
        image = sitk.ReadImage(str(path))
        if what == "size":
            image = image[:-2, :, :]
        elif what == "spacing":
            image.SetSpacing((COARSE_MM, COARSE_MM, COARSE_MM * 1.1))
        elif what == "origin":
            image.SetOrigin(tuple(o + 5.0 for o in image.GetOrigin()))
        else:
            image.SetDirection((0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
        sitk.WriteImage(image, str(path))

    return change


def _meta(text: str):
    def change(folder: Path) -> None:
        (folder / "dataset.json").write_text(text, encoding="utf-8")

    return change


REFUSALS = {
    "missing channel": (
        lambda f: _drop(f, "imagesTr/BRATS13_002_0001.nii.gz"),
        "case BRATS13_002: channel 1 file",
    ),
    "missing label": (
        lambda f: _drop(f, "labelsTr/BRATS13_002.nii.gz"),
        "case BRATS13_002: label file",
    ),
    "unlisted value": (_relabel(7.0), "case BRATS13_002: label BRATS13_002.nii.gz holds value(s) [7]"),
    "non-integral value": (_relabel(1.5), "case BRATS13_002: label BRATS13_002.nii.gz holds non-integral value 1.5"),
    "grid size": (_regrid("size"), "case BRATS13_002: channel 1 (BRATS13_002_0001.nii.gz) and label are on different grids: size"),
    "grid spacing": (_regrid("spacing"), "different grids: spacing"),
    "grid origin": (_regrid("origin"), "different grids: origin"),
    "grid direction": (_regrid("direction"), "different grids: direction"),
    "empty": (lambda f: [p.unlink() for p in f.glob("*/*")], "no cases found"),
    "not JSON": (_meta("{not json"), "dataset.json: malformed: not valid JSON"),
    "no channel_names": (
        _meta(json.dumps({"labels": {"background": 0}, "file_ending": ".nii.gz"})),
        "dataset.json: malformed: 'channel_names'",
    ),
}  # fmt: skip


@pytest.mark.parametrize("problem", sorted(REFUSALS))
def test_each_refusal_is_one_line_from_the_real_command(
    problem: str, tmp_path: Path, coarse_cases
) -> None:
    two = {k: v for k, v in coarse_cases.items() if k != "BRATS13_003"}
    folder = write_dataset(tmp_path / "data", two)
    change, expected = REFUSALS[problem]
    change(folder)
    out = tmp_path / "plan.json"
    result = run("training.plan", str(folder), "--out", str(out))
    assert result.returncode == EXIT_DATASET, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expected in lines[0], lines[0]
    assert "Traceback" not in result.stderr and not out.exists()


def test_train_refuses_a_broken_dataset_before_training(tmp_path: Path, coarse_cases) -> None:
    folder = write_dataset(tmp_path / "data", coarse_cases)
    _drop(folder, "labelsTr/BRATS13_003.nii.gz")
    result = run("training.train", "--dataset", str(folder), "--out", str(tmp_path / "run"))
    assert result.returncode == EXIT_DATASET, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "case BRATS13_003: label file" in lines[0], result.stderr
    assert lines[0].endswith("is missing")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "log.csv").exists()


def test_one_case_trains_only_with_fold_all(tmp_path: Path, coarse_cases) -> None:
    """A user's first corrected case is a dataset: it plans, and a numbered fold (which would
    validate on it and train on nothing) is refused in one line that names --fold all."""
    one = {"BRATS13_001": coarse_cases["BRATS13_001"]}
    folder = write_dataset(tmp_path / "one", one)
    assert [c.case_id for c in load_dataset(folder).cases] == ["BRATS13_001"]
    result = run(
        "training.train", "--dataset", str(folder), "--fold", "0", "--out", str(tmp_path / "run")
    )
    assert result.returncode == EXIT_DATASET, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "fold 0 leaves no case to train on" in lines[0], result.stderr
    assert "--fold all" in lines[0]


def test_per_channel_intensity_is_the_engine_rule() -> None:
    from monai.data import MetaTensor

    ct = torch.tensor([-1000.0, 0.0, 50.0, 3000.0])
    mr = torch.tensor([0.0, 2.0, 4.0, 6.0])
    volume = MetaTensor(torch.stack([ct, mr]).reshape(2, 4, 1, 1))
    rule = {
        "kind": "per_channel",
        "channels": [
            {"kind": "ct", "clip": [-100.0, 200.0], "mean": 50.0, "std": 25.0},
            {"kind": "zscore_nonzero"},
        ],
    }
    out = normalize_intensity(volume, rule).reshape(2, 4)
    assert torch.allclose(out[0], torch.tensor([-6.0, -2.0, 0.0, 6.0]))
    nonzero = torch.tensor([2.0, 4.0, 6.0])
    expected = (nonzero - nonzero.mean()) / nonzero.std(unbiased=False)
    assert out[1, 0] == 0 and torch.allclose(out[1, 1:], expected, atol=1e-5)
    with pytest.raises(Exception, match="normalises 1 channel"):
        normalize_intensity(volume, {"kind": "per_channel", "channels": rule["channels"][:1]})


def test_mha_dataset_trains_and_plans_first(tmp_path: Path, coarse_cases) -> None:
    folder = write_dataset(tmp_path / "mha", coarse_cases, ending=".mha")
    out = tmp_path / "run"
    result = run(
        "training.train", "--dataset", str(folder), "--out", str(out), "--max-steps", "1",
        "--network", '{"widths": [8, 16, 32, 64]}',
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    plan = read_plan(out / "plan.json")  # planned first, kept with the run
    assert plan["task"]["spacing_mm"] == [COARSE_MM] * 3
    header = read_header(out / "best.safetensors")
    assert [i["name"] for i in header["task_definition"]["inputs"]] == ["FLAIR", "T1Gd"]


def test_two_step_training_on_the_real_data(tmp_path: Path, brats: Path) -> None:
    plan_path = tmp_path / "plan.json"
    result = run(
        "training.plan", str(brats), "--out", str(plan_path), "--spacing", str(COARSE_MM),
        "--seed", "7",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    plan = read_plan(plan_path)
    fp = plan["fingerprint"]
    assert fp["cases"] == 5 and fp["median_spacing_mm"] == [1.0, 1.0, 1.0]
    assert [c["modality"] for c in fp["channels"]] == ["MR", "MR"]
    assert 0 < fp["class_voxel_share"]["4"] < fp["class_voxel_share"]["0"]
    assert plan["task"]["spacing_mm"] == [COARSE_MM] * 3
    assert plan["task"]["intensity"]["kind"] == "per_channel"
    assert sorted(plan["folds"]["case_fold"].values()) == [0, 1, 2, 3, 4]
    # the split is re-created from the seed
    assert brats_folds(plan["dataset"]["cases"], 5, seed=7) == plan["folds"]["case_fold"]
    plan["task"]["network"]["widths"] = [8, 16, 32, 64]  # plans are for users to edit
    plan_path.write_text(json.dumps(plan), encoding="utf-8")
    out = tmp_path / "run"
    result = run(
        "training.train", "--dataset", str(brats), "--plan", str(plan_path), "--fold", "0",
        "--max-steps", "2", "--val-every", "2", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert len((out / "log.csv").read_text(encoding="utf-8").strip().splitlines()) == 3
    header = read_header(out / "best.safetensors")
    assert header["task_definition"] == plan["task"]
    task = task_from_dict(header["task_definition"])
    assert [label.name for label in task.labels][1:] == [
        "necrosis",
        "edema",
        "non-enhancing tumour",
        "enhancing tumour",
    ]
    validation = [c for c, f in plan["folds"]["case_fold"].items() if f == 0]
    provenance = header["provenance"]
    assert provenance["dataset"] == "BraTS2013-2ch"
    assert provenance["split_cases"]["validation"] == validation
    assert validation[0] in provenance["split"]

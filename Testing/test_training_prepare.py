"""training.prepare on small synthetic download folders (real NIfTI files), errors included."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from training.prepare import main as prepare
from training.splits import BTCV_VALIDATION_CASES, brats_folds, spleen_split

REPO = Path(__file__).resolve().parents[1]


def _write(path: Path, values: np.ndarray, spacing=(1.5, 1.5, 2.0), origin=(0.0, 0.0, 0.0)):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(values)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    sitk.WriteImage(image, str(path))


def _labels(*values: int) -> np.ndarray:
    array = np.zeros((4, 6, 8), dtype=np.uint8)
    for index, value in enumerate(values):
        array[index % 4, 1 + index % 4, 2:5] = value
    return array


CT = np.full((4, 6, 8), -100, dtype=np.int16)


def _btcv(root: Path, cases=("0001", "0002", *BTCV_VALIDATION_CASES)) -> Path:
    training = root / "RawData" / "Training"
    for case in cases:
        _write(training / "img" / f"img{case}.nii.gz", CT)
        _write(training / "label" / f"label{case}.nii.gz", _labels(1, 6, 13))
    return root


def _brats(root: Path, cases=("00000", "00002", "00003", "00005", "00006")) -> Path:
    for case in cases:
        folder = root / f"BraTS2021_{case}"
        for suffix in ("flair", "t1", "t1ce", "t2"):
            _write(folder / f"BraTS2021_{case}_{suffix}.nii.gz", CT, spacing=(1, 1, 1))
        _write(folder / f"BraTS2021_{case}_seg.nii.gz", _labels(1, 2, 4), spacing=(1, 1, 1))
    return root


def _spleen(root: Path, count: int = 5) -> Path:
    task = root / "Task09_Spleen"
    for number in range(2, 2 + count):
        _write(task / "imagesTr" / f"spleen_{number}.nii.gz", CT)
        _write(task / "labelsTr" / f"spleen_{number}.nii.gz", _labels(1))
    (task / "imagesTr" / "._spleen_2.nii.gz").write_bytes(b"macOS resource fork")
    return task


def test_btcv_datalist_uses_the_fixed_validation_cases(tmp_path: Path) -> None:
    out = tmp_path / "btcv.json"
    assert (
        prepare(["--task", "btcv", "--data", str(_btcv(tmp_path / "BTCV")), "--out", str(out)]) == 0
    )
    datalist = json.loads(out.read_text(encoding="utf-8"))
    assert [e["case"] for e in datalist["validation"]] == list(BTCV_VALIDATION_CASES)
    assert [e["case"] for e in datalist["training"]] == ["0001", "0002"]
    first = datalist["training"][0]
    assert first["image"].endswith("img0001.nii.gz") and first["label"].endswith("label0001.nii.gz")
    assert "img0035" in datalist["split"]


def test_brats_datalist_has_folds_and_channel_order(tmp_path: Path) -> None:
    out = tmp_path / "brats.json"
    args = ["--task", "brats", "--data", str(_brats(tmp_path)), "--out", str(out), "--fold", "1"]
    assert prepare(args) == 0
    datalist = json.loads(out.read_text(encoding="utf-8"))
    entry = datalist["cases"][0]
    assert [Path(p).name.split("_")[-1] for p in entry["image"]] == [
        "flair.nii.gz",
        "t1.nii.gz",
        "t1ce.nii.gz",
        "t2.nii.gz",
    ]  # the task's FLAIR, T1, T1Gd, T2
    assert {e["case"] for e in datalist["validation"]} == {
        c["case"] for c in datalist["cases"] if c["fold"] == 1
    }
    # 1,251 cases: fold sizes 251, 250, 250, 250, 250, and the same on every call
    folds = brats_folds(f"BraTS2021_{i:05d}" for i in range(1251))
    assert sorted(np.bincount(list(folds.values()))) == [250, 250, 250, 250, 251]
    assert folds == brats_folds(f"BraTS2021_{i:05d}" for i in reversed(range(1251)))


def test_spleen_split_is_32_9_and_ignores_macos_files(tmp_path: Path) -> None:
    out = tmp_path / "spleen.json"
    assert prepare(["--task", "spleen", "--data", str(_spleen(tmp_path)), "--out", str(out)]) == 0
    datalist = json.loads(out.read_text(encoding="utf-8"))
    assert len(datalist["training"]) + len(datalist["validation"]) == 5
    train, validation = spleen_split(str(i) for i in range(41))
    assert (len(train), len(validation)) == (32, 9)


def test_missing_folder_is_one_line_exit_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "training.prepare",
            "--task",
            "btcv",
            "--data",
            str(tmp_path / "nowhere"),
            "--out",
            str(tmp_path / "x.json"),
        ],
        cwd=REPO,
        capture_output=True,
        encoding="utf-8",
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "does not exist" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "x.json").exists()


@pytest.mark.parametrize(
    "damage, message",
    [
        ("missing_label", "has no label"),
        ("grid", "different grids (spacing"),
        ("values", "unexpected label value(s) [14]"),
        ("validation_case", "validation cases are incomplete: img0040"),
    ],
)
def test_btcv_problems_are_reported_one_per_line(tmp_path, capsys, damage, message) -> None:
    root = _btcv(tmp_path / "BTCV")
    training = root / "RawData" / "Training"
    if damage == "missing_label":
        (training / "label" / "label0002.nii.gz").unlink()
    elif damage == "grid":
        _write(training / "label" / "label0002.nii.gz", _labels(1), spacing=(1.0, 1.5, 2.0))
    elif damage == "values":
        _write(training / "label" / "label0002.nii.gz", _labels(1, 14))
    else:
        (training / "img" / "img0040.nii.gz").unlink()
        (training / "label" / "label0040.nii.gz").unlink()
    out = tmp_path / "btcv.json"
    assert prepare(["--task", "btcv", "--data", str(root), "--out", str(out)]) == 1
    errors = capsys.readouterr().err.strip().splitlines()
    assert any(message in line for line in errors), errors
    assert all(line.startswith("error: ") for line in errors)
    assert not out.exists()


def test_brats_missing_sequence_and_2023_labels_are_caught(tmp_path, capsys) -> None:
    root = _brats(tmp_path, cases=("00000", "00001"))
    (root / "BraTS2021_00000" / "BraTS2021_00000_t1ce.nii.gz").unlink()
    _write(
        root / "BraTS2021_00001" / "BraTS2021_00001_seg.nii.gz", _labels(1, 3), spacing=(1, 1, 1)
    )
    assert prepare(["--task", "brats", "--data", str(root), "--out", str(tmp_path / "b.json")]) == 1
    err = capsys.readouterr().err
    assert "BraTS2021_00000: missing BraTS2021_00000_t1ce.nii.gz" in err
    assert "unexpected label value(s) [3]" in err


def test_wrong_layout_is_exit_2(tmp_path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert (
        prepare(
            [
                "--task",
                "spleen",
                "--data",
                str(tmp_path / "empty"),
                "--out",
                str(tmp_path / "s.json"),
            ]
        )
        == 2
    )
    assert "no imagesTr" in capsys.readouterr().err

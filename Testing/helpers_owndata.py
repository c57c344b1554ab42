"""A model of the user's own data, built for real: a task for the two-channel BraTS 2013 nnU-Net
dataset in ``../shared/data/brats2013-2ch`` (label names read from its ``dataset.json``) and a
tiny SegResMamba checkpoint whose header carries that task, as training writes it; and tiny
dataset folders of its real cases at 6 mm for training tests (partly labelled ones included)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from segresmamba.network import SegResMamba
from segresmamba.tasks import task_from_dict
from segresmamba.weights import make_header, save_checkpoint

OWN_TASK = "brats2013-2ch"
TINY_WIDTHS = (8, 16, 32, 64)
PALETTE = [(0.0, 0.0, 0.0), (0.9, 0.3, 0.2), (0.3, 0.75, 0.35), (0.2, 0.45, 0.9), (1.0, 0.85, 0.1)]
GENERIC = {
    "category": {"scheme": "SCT", "value": "85756007", "meaning": "Tissue"},
    "type": {"scheme": "SCT", "value": "85756007", "meaning": "Tissue"},
}


def own_task_dict(dataset: Path, name: str = OWN_TASK) -> dict[str, Any]:
    """The task a plan of ``dataset`` describes: its channels in order, its labels by value."""
    info = json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))
    channels = [info["channel_names"][key] for key in sorted(info["channel_names"], key=int)]
    labels = sorted(info["labels"].items(), key=lambda item: item[1])
    return {
        "name": name,
        "title": "BraTS 2013, FLAIR + T1Gd (own data)",
        "description": "Glioma labels trained on the user's own nnU-Net dataset",
        "dataset": info["name"],
        "modality": "MR",
        "inputs": [
            {"name": c, "description": f"channel {i} of {info['name']}", "name_patterns": []}
            for i, c in enumerate(channels)
        ],
        "output": "softmax",
        "labels": [
            {"value": value, "name": label, "color": list(PALETTE[value]), "terminology": GENERIC}
            for label, value in labels
        ],
        "spacing_mm": [3.0, 3.0, 3.0],
        "fast_spacing_mm": [6.0, 6.0, 6.0],
        "patch_size": [64, 64, 64],
        "intensity": {"kind": "zscore_nonzero"},
        "network": {"widths": list(TINY_WIDTHS)},
    }


def own_checkpoint(path: Path, dataset: Path, seed: int = 0, name: str = OWN_TASK) -> Path:
    """An untrained tiny network for the own task, saved with the header training writes."""
    task = task_from_dict(own_task_dict(dataset, name), source="test task")
    torch.manual_seed(seed)
    model = SegResMamba(task.in_channels, task.out_channels, widths=TINY_WIDTHS)
    provenance = {"dataset": task.dataset, "split": {"fold": 0, "seed": 0}, "steps": 0}
    header = make_header(task, {"widths": list(TINY_WIDTHS)}, provenance)
    return save_checkpoint(path, model, header)


# Tiny real datasets for training tests: BraTS 2013 cases resampled to 6 mm (about 40 x 40 x 26
# voxels), so a training step takes seconds on two cores and validation one window per case.

COARSE_MM = 6.0
BRATS_CASES = ("BRATS13_001", "BRATS13_002", "BRATS13_003")


def coarse(image: sitk.Image, label: bool, spacing_mm: float = COARSE_MM) -> sitk.Image:
    """``image`` resampled to an isotropic ``spacing_mm`` grid (labels by nearest neighbour)."""
    spacing = (spacing_mm,) * 3
    size = [int(round(n * s / spacing_mm)) for n, s in zip(image.GetSize(), image.GetSpacing())]
    interpolator = sitk.sitkNearestNeighbor if label else sitk.sitkLinear
    return sitk.Resample(
        image, size, sitk.Transform(), interpolator, image.GetOrigin(), spacing,
        image.GetDirection(), 0.0, image.GetPixelID(),
    )  # fmt: skip


def coarse_cases(
    brats: Path, cases: tuple[str, ...] = BRATS_CASES
) -> dict[str, tuple[list[sitk.Image], sitk.Image]]:
    """Real cases of the two-channel BraTS 2013 dataset at 6 mm: (channels, float label)."""
    out = {}
    for case in cases:
        images = [
            coarse(sitk.ReadImage(str(brats / "imagesTr" / f"{case}_{c:04d}.nii.gz")), False)
            for c in range(2)
        ]
        label = coarse(sitk.ReadImage(str(brats / "labelsTr" / f"{case}.nii.gz")), True)
        out[case] = (images, label)
    return out


def write_dataset(
    folder: Path, cases: dict, base: Path, ending: str = ".nii.gz", **changes: Any
) -> Path:
    """An nnU-Net v2 folder from (channels, label) images, with ``base``'s dataset.json edited
    by ``changes`` (e.g. ``labels=...``, ``channel_names=...``)."""
    meta = json.loads((base / "dataset.json").read_text(encoding="utf-8"))
    meta.update(file_ending=ending, numTraining=len(cases), **changes)
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    (folder / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
    for case, (images, label) in cases.items():
        for channel, image in enumerate(images):
            sitk.WriteImage(image, str(folder / "imagesTr" / f"{case}_{channel:04d}{ending}"))
        sitk.WriteImage(label, str(folder / "labelsTr" / f"{case}{ending}"))
    return folder


def with_array(image: sitk.Image, array: np.ndarray) -> sitk.Image:
    """A copy of ``image``'s grid holding ``array`` ((z, y, x) as SimpleITK gives it)."""
    out = sitk.GetImageFromArray(array.astype(sitk.GetArrayViewFromImage(image).dtype))
    out.CopyInformation(image)
    return out


def partly_labelled(label: sitk.Image, keep_slices: range, ignore_value: int) -> sitk.Image:
    """``label`` with every axial slice outside ``keep_slices`` marked ``ignore_value``, as a
    user who corrected only those slices leaves it (Slicer's *Only the slices I edited*)."""
    array = sitk.GetArrayFromImage(label)
    outside = np.ones(array.shape[0], dtype=bool)
    outside[list(keep_slices)] = False
    array[outside] = ignore_value
    return with_array(label, array)


# The real commands, as a user runs them, in a per-user folder of the test's own.


def run_cli(*args, home: Path, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m segresmamba ARGS`` with ``SEGRESMAMBA_HOME`` at ``home``."""
    env = {
        **os.environ,
        "SEGRESMAMBA_HOME": str(home),
        "PYTHONWARNINGS": "ignore",
        "OMP_NUM_THREADS": "2",
    }
    return subprocess.run(
        [sys.executable, "-m", "segresmamba", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=timeout,
    )


def one_error_line(result: subprocess.CompletedProcess, code: int, *words: str) -> str:
    """The command's one ``error:`` line (exit ``code``, no traceback), holding ``words``."""
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dataset_add(*args, cwd: Path) -> subprocess.CompletedProcess:
    """``segresmamba dataset add ARGS`` with the per-user folder in ``cwd/home``."""
    env = {**os.environ, "SEGRESMAMBA_HOME": str(cwd / "home"), "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "segresmamba", "dataset", "add", *map(str, args)],
        cwd=cwd, env=env, capture_output=True, encoding="utf-8", timeout=120,
    )  # fmt: skip


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) with its bytes: what a refusal must leave."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}

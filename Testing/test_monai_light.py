"""The segment command imports MONAI without the packages inference never uses (issue 22, point
2, startup): SciPy's submodules, matplotlib, TensorBoard cost seconds at every start. The labels
must be exactly those of a process that imported MONAI in full, on a real CT (resampled, many
windows, CT window) and a real BraTS case (four MR inputs, z-score, sigmoid regions).
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
from helpers_segment import tiny_checkpoint

REPO = Path(__file__).resolve().parents[1]
HIDDEN = ("matplotlib", "tensorboard", "scipy.ndimage", "scipy.optimize", "scipy.sparse")
"""What MONAI's full import loads here ([train] extras installed) and segment must not."""

CHILD = """
import json, sys
if sys.argv[1] == "full":
    import monai  # MONAI's ordinary import, with every optional package it finds
from segresmamba.cli import main
code = main(sys.argv[2:])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def _segment(kind: str, arguments: list[str], cwd: Path) -> list[str]:
    """Run ``segresmamba segment`` in a fresh process; returns the modules it had loaded."""
    env = dict(os.environ)
    path = [str(REPO / "SegResMambaSlicer"), str(REPO), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in path if p)
    done = subprocess.run(
        [sys.executable, "-c", CHILD, kind, "segment", "-q", *arguments, "--device", "cpu"],
        env=env,
        cwd=cwd,
        capture_output=True,
        encoding="utf-8",
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["code"] == 0, done.stderr
    return report["modules"]


def _labels(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("monai-light")
    tiny_checkpoint(folder / "btcv.safetensors", "btcv")
    tiny_checkpoint(folder / "brats.safetensors", "brats")
    return folder


def test_segment_imports_no_package_inference_does_not_use(models: Path, shared_data: Path):
    ct = shared_data / "ct-abdomen" / "example_ct_sm.nii.gz"
    arguments = ["-t", "btcv", "-i", str(ct), "--model", str(models / "btcv.safetensors")]
    light = _segment("light", [*arguments, "-o", "light.nii.gz"], models)
    full = _segment("full", [*arguments, "-o", "full.nii.gz"], models)
    assert "monai" in light and "monai.inferers" in light
    assert [name for name in HIDDEN if name in light] == []
    assert [name for name in HIDDEN if name in full] == list(HIDDEN), "the check would not fail"
    assert np.array_equal(_labels(models / "light.nii.gz"), _labels(models / "full.nii.gz"))


def test_brats_labels_are_those_of_a_full_monai_import(models: Path, shared_data: Path):
    case = models / "brats-crop"
    case.mkdir(exist_ok=True)
    inputs = []
    for sequence, suffix in (("FLAIR", "t2f"), ("T1", "t1n"), ("T1Gd", "t1c"), ("T2", "t2w")):
        image = sitk.ReadImage(str(shared_data / "brats-gli-00001" / f"{suffix}.nii.gz"))
        path = case / f"{suffix}.nii.gz"
        sitk.WriteImage(sitk.RegionOfInterest(image, (96, 96, 64), (72, 72, 50)), str(path))
        inputs += ["-i", f"{sequence}={path}"]
    arguments = ["-t", "brats", *inputs, "--model", str(models / "brats.safetensors"), "--regions"]
    _segment("light", [*arguments, "-o", "light-brats.nii.gz"], models)
    _segment("full", [*arguments, "-o", "full-brats.nii.gz"], models)
    light, full = _labels(models / "light-brats.nii.gz"), _labels(models / "full-brats.nii.gz")
    assert light.shape[-1] == 3 and np.array_equal(light, full)

"""The ``segresmamba`` command through a real subprocess (``python -m segresmamba``).

Every bad input of the issue must end with one ``error: ...`` line, no traceback, the
documented exit code and no output file (nor a temporary one left behind).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import nrrd
import numpy as np
import pytest
import SimpleITK as sitk
from helpers_segment import tiny_checkpoint

from segresmamba.cli import build_parser, main
from segresmamba.cli_segment import plan_cases
from segresmamba.errors import SegResMambaError
from segresmamba.phantom import make_phantom
from segresmamba.tasks import get_task
from segresmamba.weights import get_model

BRATS_FILES = ("t2f", "t1n", "t1c", "t2w")


def run_cli(*args, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "SEGRESMAMBA_HOME": str(cwd / "cache"), "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "segresmamba", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=timeout,
    )


def assert_clean_failure(result, code: int, match: str, *outputs: Path) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert match in lines[0], lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    for output in outputs:
        assert not output.exists()
        assert not list(output.parent.glob(f".{output.name.split('.')[0]}*")), "temporary left"


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A folder with a small phantom CT, tiny phantom and BraTS checkpoints, and bad images."""
    folder = tmp_path_factory.mktemp("cli")
    for seed in (1, 2):
        ct, truth = make_phantom(seed, size=(64, 64, 40))
        sitk.WriteImage(ct, str(folder / f"ct{seed}.nii.gz"))
    sitk.WriteImage(truth, str(folder / "truth2.nii.gz"))
    tiny_checkpoint(folder / "phantom.safetensors", "phantom")
    tiny_checkpoint(folder / "brats.safetensors", "brats")
    ct = sitk.ReadImage(str(folder / "ct1.nii.gz"))
    voxels = sitk.GetArrayFromImage(ct).astype(np.float32)
    bad = {
        "flat.nii.gz": sitk.GetImageFromArray(voxels[20]),
        "series.nii.gz": sitk.JoinSeries([ct, ct]),
        "constant.nrrd": sitk.GetImageFromArray(np.full_like(voxels, -1000)),
    }
    for name, value in (("nan.nrrd", np.nan), ("inf.nii.gz", np.inf)):
        broken = voxels.copy()
        broken[10, 20, 30] = value
        bad[name] = sitk.GetImageFromArray(broken)
    for name, image in bad.items():
        sitk.WriteImage(image, str(folder / name))
    return folder


@pytest.mark.parametrize(
    "image, message",
    [
        ("flat.nii.gz", "is a 2D image"),
        ("series.nii.gz", "is 4D"),
        ("nan.nrrd", "NaN or infinite"),
        ("inf.nii.gz", "NaN or infinite"),
        ("constant.nrrd", "blank"),
        ("missing.nii.gz", "does not exist"),
    ],
)
def test_bad_images_fail_cleanly(work, image, message):
    output = work / f"out-{image.split('.')[0]}.nii.gz"
    result = run_cli(
        "segment",
        "-t",
        "phantom",
        "-i",
        image,
        "-o",
        output,
        "--model",
        "phantom.safetensors",
        cwd=work,
    )
    assert_clean_failure(result, 2, message, output)


def test_wrong_number_of_inputs(work):
    output = work / "wrong.nii.gz"
    result = run_cli("segment", "-t", "brats", "-i", "ct1.nii.gz", "-o", output, cwd=work)
    assert_clean_failure(result, 2, "takes 4 input image(s) per case", output)
    result = run_cli(
        "segment", "-t", "phantom", "-i", "ct1.nii.gz", "-i", "ct2.nii.gz", "-o", output, cwd=work
    )
    assert_clean_failure(result, 2, "for several cases give -o a folder", output)


def test_unknown_task_and_usage_errors(work):
    output = work / "never.nii.gz"
    result = run_cli("segment", "-t", "kidneys", "-i", "ct1.nii.gz", "-o", output, cwd=work)
    assert_clean_failure(result, 2, "unknown task 'kidneys'; known tasks:", output)
    result = run_cli("segment", "-t", "phantom", "-i", "ct1.nii.gz", cwd=work)
    assert_clean_failure(result, 2, "required: -o/--output", output)
    result = run_cli("segment", "-t", "phantom", "-i", "ct1.nii.gz", "-o", "seg.png", cwd=work)
    assert_clean_failure(result, 2, "unknown output format", work / "seg.png")


def test_existing_output_is_kept_without_overwrite(work):
    output = work / "exists.nii.gz"
    output.write_bytes(b"a result someone needs")
    result = run_cli("segment", "-t", "phantom", "-i", "ct1.nii.gz", "-o", output, cwd=work)
    assert result.returncode == 2 and result.stderr.strip().startswith("error: output")
    assert "already exists; use --overwrite" in result.stderr
    assert output.read_bytes() == b"a result someone needs"


def test_unwritable_output_folder(work, tmp_path):
    if os.geteuid() == 0:  # root ignores permission bits
        folder = Path("/sys")
    else:
        folder = tmp_path / "locked"
        folder.mkdir()
        folder.chmod(0o500)
    output = folder / "seg.nii.gz"
    result = run_cli(
        "segment",
        "-t",
        "phantom",
        "-i",
        "ct1.nii.gz",
        "-o",
        output,
        "--model",
        "phantom.safetensors",
        cwd=work,
    )
    assert_clean_failure(result, 2, "is not writable", output)


@pytest.mark.parametrize("damage", ["truncated", "tampered"])
def test_damaged_checkpoint_is_a_model_error(work, damage):
    checkpoint = work / f"{damage}.safetensors"
    data = bytearray((work / "phantom.safetensors").read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data[-1000] ^= 0x40  # one bit of one weight
    checkpoint.write_bytes(bytes(data))
    output = work / f"{damage}.nii.gz"
    result = run_cli(
        "segment",
        "-t",
        "phantom",
        "-i",
        "ct1.nii.gz",
        "-o",
        output,
        "--model",
        checkpoint,
        cwd=work,
    )
    assert_clean_failure(result, 3, "truncated" if damage == "truncated" else "corrupt", output)
    verify = run_cli("models", "verify", checkpoint, cwd=work)
    assert_clean_failure(verify, 3, checkpoint.name)


def test_segment_one_case_to_seg_nrrd_with_json_progress(work):
    output = work / "one.seg.nrrd"
    result = run_cli(
        "segment",
        "-t",
        "phantom",
        "-i",
        "ct1.nii.gz",
        "-o",
        output,
        "--model",
        "phantom.safetensors",
        "--fast",
        "--progress-json",
        cwd=work,
    )
    assert result.returncode == 0, result.stderr
    assert f"wrote {output}" in result.stdout
    labels = sitk.ReadImage(str(output))
    assert_same_grid_loose(labels, sitk.ReadImage(str(work / "ct1.nii.gz")))
    _, header = nrrd.read(str(output), index_order="C")
    names = [header[f"Segment{i}_Name"] for i in range(5)]
    assert names == [label.name for label in get_task("phantom").foreground_labels]
    reports = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert reports and all(r["event"] == "progress" and r["case"] == "ct1" for r in reports)
    assert [r["stage"] for r in reports][-1] == "done" and reports[-1]["fraction"] == 1.0
    assert [r["fraction"] for r in reports] == sorted(r["fraction"] for r in reports)
    assert "\r" not in result.stderr  # no progress bar redraws mixed in


def assert_same_grid_loose(a: sitk.Image, b: sitk.Image) -> None:
    """Same grid up to the float32 precision of NIfTI headers."""
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)


def test_cohort_planning(work, tmp_path):
    """-i repeated with -o a folder is a cohort for one-input tasks; names never collide."""
    parser = build_parser()
    args = parser.parse_args(
        [
            "segment",
            "-t",
            "phantom",
            "-i",
            "a/ct.nii.gz",
            "-i",
            "b.nrrd",
            "-o",
            str(tmp_path / "out"),
        ]
    )
    cases = plan_cases(args, get_task("phantom"))
    assert [c.output.name for c in cases] == ["ct_phantom.nii.gz", "b_phantom.nii.gz"]
    assert (tmp_path / "out").is_dir()
    args = parser.parse_args(
        ["segment", "-t", "phantom", "-i", "a/ct.nii.gz", "-i", "b/ct.nrrd", "-o", str(tmp_path)]
    )
    with pytest.raises(SegResMambaError, match="would both write ct_phantom.nii.gz"):
        plan_cases(args, get_task("phantom"))
    args = parser.parse_args(
        ["segment", "-t", "phantom", "-i", "ct.nii.gz", "-o", f"{tmp_path}/new/"]
    )
    [case] = plan_cases(args, get_task("phantom"))
    assert case.output == tmp_path / "new" / "ct_phantom.nii.gz"


def test_batch_loads_the_model_once(work):
    listing = work / "cases.txt"
    listing.write_text("# one case per line\nct1.nii.gz\n\nct2.nii.gz\n", encoding="utf-8")
    batch = work / "batch"
    result = run_cli(
        "segment",
        "-t",
        "phantom",
        "--batch",
        listing,
        "-o",
        batch,
        "--format",
        ".nrrd",
        "--model",
        "phantom.safetensors",
        "--fast",
        cwd=work,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("note: model ") == 1
    assert sorted(p.name for p in batch.iterdir()) == ["ct1_phantom.nrrd", "ct2_phantom.nrrd"]
    for seed in (1, 2):
        labels = sitk.ReadImage(str(batch / f"ct{seed}_phantom.nrrd"))
        assert_same_grid_loose(labels, sitk.ReadImage(str(work / f"ct{seed}.nii.gz")))


@pytest.fixture(scope="module")
def brats_case(work, shared_data) -> Path:
    """The real BraTS case cropped around its centre (to stay fast); FLAIR keeps its grid, T1 is
    moved onto a coarser, shifted grid, as sequences of one study often are."""
    folder = work / "brats"
    folder.mkdir()
    for name in BRATS_FILES:
        image = sitk.ReadImage(str(shared_data / "brats-gli-00001" / f"{name}.nii.gz"))
        image = sitk.RegionOfInterest(image, (112, 112, 80), (64, 64, 40))
        if name == "t1n":
            grid = sitk.Image((80, 76, 50), image.GetPixelID())
            grid.SetSpacing((1.5, 1.5, 1.7))
            grid.SetDirection(image.GetDirection())
            grid.SetOrigin(tuple(np.add(image.GetOrigin(), (-5.0, 3.0, 2.5))))
            image = sitk.Resample(image, grid, sitk.Transform(), sitk.sitkLinear, 0.0)
        sitk.WriteImage(image, str(folder / f"BraTS-GLI-00001-000-{name}.nii.gz"))
    return folder


def test_brats_four_inputs_end_to_end(work, brats_case):
    """Inputs given out of order are recognised by name; the T1 on another grid is resampled
    with a note; the combined labelmap lands on FLAIR's grid with BraTS 2023 values."""
    inputs = [brats_case / f"BraTS-GLI-00001-000-{n}.nii.gz" for n in ("t1c", "t2w", "t1n", "t2f")]
    output = work / "brats.seg.nrrd"
    args = [a for path in inputs for a in ("-i", path)]
    result = run_cli(
        "segment",
        "-t",
        "brats",
        *args,
        "-o",
        output,
        "--model",
        "brats.safetensors",
        "--fast",
        cwd=work,
    )
    assert result.returncode == 0, result.stderr
    assert (
        "inputs: FLAIR=BraTS-GLI-00001-000-t2f.nii.gz, T1=BraTS-GLI-00001-000-t1n" in result.stderr
    )
    assert (
        "different grid" in result.stderr
        and "resampled onto the first input's grid" in result.stderr
    )
    labels = sitk.ReadImage(str(output))
    assert_same_grid_loose(labels, sitk.ReadImage(str(inputs[-1])))
    assert set(np.unique(sitk.GetArrayViewFromImage(labels))) <= {0, 1, 2, 3}
    _, header = nrrd.read(str(output), index_order="C")
    assert [header[f"Segment{i}_Name"] for i in range(3)] == [
        label.name for label in get_task("brats").labelmap.labels
    ]


def assert_demo_ran(result, out: Path) -> None:
    assert result.returncode == 0, result.stderr
    for name in ("demo_ct.nii.gz", "demo_truth.nii.gz", "demo_seg.nii.gz"):
        assert (out / name).is_file()
    truth, seg = (sitk.ReadImage(str(out / f"demo_{n}.nii.gz")) for n in ("truth", "seg"))
    assert_same_grid_loose(seg, truth)
    lines = result.stdout.splitlines()
    for label in get_task("phantom").foreground_labels:
        row = next(line for line in lines if line.startswith(label.name))
        assert 0.0 <= float(row.split()[-1]) <= 1.0
    assert any(line.startswith("segmented in") for line in lines)


def test_demo_with_a_given_checkpoint_scores_the_phantom(work):
    out = work / "demo-tiny"
    result = run_cli("demo", "--out", out, "--model", "phantom.safetensors", "--fast", cwd=work)
    assert_demo_ran(result, out)


def test_demo_uses_the_bundled_model_or_says_it_is_missing(work):
    out = work / "demo"
    result = run_cli("demo", "--out", out, "--fast", cwd=work)
    bundled = get_model("phantom-demo").bundled_path()
    if bundled is not None and bundled.is_file():
        assert_demo_ran(result, out)
    else:
        assert_clean_failure(result, 3, "the demo model is not there yet", out / "demo_seg.nii.gz")
        assert not out.exists()


def test_ctrl_c_exits_130_and_leaves_no_file(work):
    output = work / "interrupted.nii.gz"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "segresmamba",
            "--debug",
            "segment",
            "-t",
            "phantom",
            "-i",
            "ct1.nii.gz",
            "-o",
            str(output),
            "--model",
            "phantom.safetensors",
            "--tta",
            "--overlap",  # many windows: the work outlasts the signal's way even on a fast,
            "0.85",  # idle machine (at 0.25 the run could end before the signal came)
        ],
        cwd=work,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        encoding="utf-8",
        errors="replace",
        env={**os.environ, "SEGRESMAMBA_HOME": str(work / "cache"), "PYTHONWARNINGS": "ignore"},
    )
    for line in process.stderr:
        if "working grid" in line:
            break
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "error: interrupted" in stderr and "Traceback" not in stderr
    assert not output.exists()


def test_help_lists_the_exit_codes(capsys):
    assert main(["segment", "--help"]) == 0
    text = capsys.readouterr().out
    for code in ("0 ", "1 ", "2 ", "3 ", "130"):
        assert f"\n  {code}" in text
    assert main(["models", "list"]) == 0
    assert "phantom-demo" in capsys.readouterr().out

"""A cohort under torchrun: two real gloo processes on the CPU, real and broken cases, an output
that already exists, and a rerun that redoes only what is missing; and a plain cohort in one
process that goes on past a case that fails with an unexpected error (issue 20, points 5-6)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from helpers_segment import tiny_checkpoint
from test_cli import assert_clean_failure, run_cli

from segresmamba.cohort import Rank, shard
from segresmamba.io import Segment
from segresmamba.phantom import make_phantom
from segresmamba.statistics import read_statistics, segment_statistics, write_statistics


def torchrun(*args, cwd: Path) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "segresmamba", "segment", *map(str, args),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SEGRESMAMBA_HOME": str(cwd / "cache")}
    # Two ranks share one stderr, so their progress bars can interleave mid-character.
    return subprocess.run(
        command,
        cwd=cwd,
        env=env,
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=600,
    )


def test_shards_are_disjoint_and_complete():
    cases = list(range(11))
    shards = [shard(cases, Rank(r, 3, r, 3)) for r in range(3)]
    assert sorted(sum(shards, [])) == cases
    assert shards[1] == [1, 4, 7, 10]


def test_two_gloo_ranks_segment_a_cohort_with_broken_cases(tmp_path: Path):
    for seed in (1, 2, 3):
        ct, _ = make_phantom(seed, size=(48, 48, 32))
        sitk.WriteImage(ct, str(tmp_path / f"ct{seed}.nii.gz"))
    (tmp_path / "broken.nii.gz").write_bytes(b"not an image")
    model = tiny_checkpoint(tmp_path / "phantom.safetensors", "phantom")
    out = tmp_path / "out"
    out.mkdir()
    (out / "ct3_phantom.nii.gz").write_bytes(b"finished before the crash")
    listing = tmp_path / "cases.txt"
    # rank 0: ct1, missing, broken; rank 1: ct2, ct3 (exists)
    listing.write_text(
        "ct1.nii.gz\nct2.nii.gz\nmissing.nii.gz\nct3.nii.gz\nbroken.nii.gz\n", encoding="utf-8"
    )
    options = ("-t", "phantom", "--batch", listing, "-o", out, "--model", model, "--fast")

    first = torchrun(*options, "--statistics", tmp_path / "stats.json", cwd=tmp_path)
    text = first.stdout + first.stderr
    assert first.returncode != 0, text  # two cases failed
    assert first.stdout.count("summary:") == 1, text  # rank 0 only
    assert "summary: 2 done, 1 skipped (output exists; --overwrite redoes them), 2 failed" in text
    assert "failed: missing: input " in first.stdout and "does not exist" in first.stdout
    assert "failed: broken: cannot read " in first.stdout
    assert text.count("note: model ") == 2, text  # once per rank, not once per case
    assert sorted(p.name for p in out.iterdir()) == [
        "ct1_phantom.nii.gz",
        "ct2_phantom.nii.gz",
        "ct3_phantom.nii.gz",
    ]  # fmt: skip  (no temporaries left)
    assert (out / "ct3_phantom.nii.gz").read_bytes() == b"finished before the crash"
    rows = json.loads((tmp_path / "stats.json").read_text(encoding="utf-8"))["segments"]
    assert {row["case"] for row in rows} == {"ct1", "ct2"}

    # Resume after ct1's result was lost: only ct1 is redone, and the statistics file keeps
    # ct2's rows from the first run while ct1's new rows replace its old ones (point 6).
    (out / "ct1_phantom.nii.gz").unlink()
    again = torchrun(*options, "--statistics", tmp_path / "stats.json", cwd=tmp_path)
    text = again.stdout + again.stderr
    assert again.returncode != 0
    assert "summary: 1 done, 2 skipped (output exists; --overwrite redoes them), 2 failed" in text
    assert text.count("note: model ") == 1, text  # only the rank that had work loaded it
    assert "kept the rows of 1 earlier case(s)" in again.stdout, text
    merged = json.loads((tmp_path / "stats.json").read_text(encoding="utf-8"))["segments"]
    assert sorted((r["case"], r["segment"]) for r in merged) == sorted(
        (r["case"], r["segment"]) for r in rows
    )  # the same cases and segments, none lost and none twice


def test_plain_cohort_goes_on_after_an_unexpected_error_and_merges_statistics(tmp_path: Path):
    """A complex-valued NIfTI (as MR raw data is stored) passes the reader but makes SimpleITK's
    Cast raise a RuntimeError, not a SegResMambaError: a bug, which must not stop the cohort."""
    for seed in (1, 2):
        ct, truth = make_phantom(seed, size=(48, 48, 32))
        sitk.WriteImage(ct, str(tmp_path / f"ct{seed}.nii.gz"))
    values = sitk.GetArrayFromImage(ct).astype(np.complex64)
    complex_ct = sitk.GetImageFromArray(values)
    complex_ct.CopyInformation(ct)
    sitk.WriteImage(complex_ct, str(tmp_path / "complex.nii.gz"))
    model = tiny_checkpoint(tmp_path / "phantom.safetensors", "phantom")
    # An earlier run's table: a case not in this cohort, and stale numbers for ct1.
    stats = tmp_path / "stats.csv"
    earlier = segment_statistics("earlier", truth, ct, [Segment("liver", 1, (1, 0, 0))])
    stale = segment_statistics("ct1", truth, ct, [Segment("liver", 1, (1, 0, 0))])
    stale[0].voxel_count = 999999
    write_statistics(earlier + stale, stats)

    inputs = [a for name in ("ct1", "complex", "ct2") for a in ("-i", tmp_path / f"{name}.nii.gz")]
    result = run_cli(
        "segment", "-t", "phantom", *inputs, "-o", tmp_path / "out", "--model", model, "--fast",
        "--statistics", stats, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr  # the documented code of an unexpected error
    assert "error: complex: unexpected RuntimeError: " in result.stderr
    assert "Traceback" not in result.stderr
    assert "summary: 2 done, 1 failed" in result.stdout
    assert "failed: complex: unexpected RuntimeError: " in result.stdout
    assert "kept the rows of 1 earlier case(s)" in result.stdout
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["ct1_phantom.nii.gz", "ct2_phantom.nii.gz"]  # no temporaries either
    table = list(csv.DictReader(stats.open(encoding="utf-8")))
    cases = [row["case"] for row in table]
    assert cases[0] == "earlier" and cases[1] == "ct1" and set(cases) == {"earlier", "ct1", "ct2"}
    for name in ("ct1", "ct2"):
        labels = sitk.GetArrayFromImage(
            sitk.ReadImage(str(tmp_path / "out" / f"{name}_phantom.nii.gz"))
        )
        mine = [row for row in table if row["case"] == name]
        assert len(mine) == 5  # each phantom organ once: the stale ct1 row is replaced
        for row in mine:
            assert int(row["voxel_count"]) == int((labels == int(row["label_value"])).sum())


def test_a_foreign_statistics_file_is_refused_without_overwrite(tmp_path: Path):
    ct, _ = make_phantom(1, size=(48, 48, 32))
    sitk.WriteImage(ct, str(tmp_path / "ct1.nii.gz"))
    model = tiny_checkpoint(tmp_path / "phantom.safetensors", "phantom")
    stats = tmp_path / "stats.json"
    stats.write_text('{"my": "notes"}\n', encoding="utf-8")
    options = ("segment", "-t", "phantom", "-i", tmp_path / "ct1.nii.gz", "--model", model)
    options += ("--fast", "--statistics", stats)
    refused = run_cli(*options, "-o", tmp_path / "seg.nii.gz", cwd=tmp_path)
    assert_clean_failure(refused, 2, "is not a statistics table", tmp_path / "seg.nii.gz")
    assert stats.read_text(encoding="utf-8") == '{"my": "notes"}\n'
    replaced = run_cli(*options, "-o", tmp_path / "seg.nii.gz", "--overwrite", cwd=tmp_path)
    assert replaced.returncode == 0, replaced.stderr
    assert {row.case for row in read_statistics(stats)} == {"ct1"}


def test_ctrl_c_in_a_plain_cohort_keeps_the_finished_cases_statistics(tmp_path: Path):
    # ct2 is large, so its run outlasts the signal's way even on a fast, idle machine
    for seed, size in ((1, (64, 64, 40)), (2, (192, 192, 120))):
        ct, _ = make_phantom(seed, size=size)
        sitk.WriteImage(ct, str(tmp_path / f"ct{seed}.nii.gz"))
    model = tiny_checkpoint(tmp_path / "phantom.safetensors", "phantom")
    stats = tmp_path / "stats.json"
    command = [
        sys.executable, "-m", "segresmamba", "segment", "-t", "phantom", "-i", "ct1.nii.gz",
        "-i", "ct2.nii.gz", "-o", "out", "--model", model, "--tta", "--statistics", stats,
    ]  # fmt: skip
    env = {**os.environ, "SEGRESMAMBA_HOME": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        encoding="utf-8", errors="replace",
    )  # fmt: skip
    for line in process.stdout:
        if line.startswith("ct1: wrote"):
            break
    process.send_signal(signal.SIGINT)  # while ct2 is being segmented
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "error: interrupted" in stderr and "Traceback" not in stderr
    assert "summary: 1 done, 0 failed" in stdout
    assert {row.case for row in read_statistics(stats)} == {"ct1"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ct1_phantom.nii.gz"]

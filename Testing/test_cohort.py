"""A cohort under torchrun: two real gloo processes on the CPU, real and broken cases, an output
that already exists, and a rerun that has nothing left to do but the broken cases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import SimpleITK as sitk
from helpers_segment import tiny_checkpoint

from segresmamba.cohort import Rank, shard
from segresmamba.phantom import make_phantom


def torchrun(*args, cwd: Path) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "segresmamba", "segment", *map(str, args),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SEGRESMAMBA_HOME": str(cwd / "cache")}
    # Two ranks share one stderr, so their progress bars can interleave mid-character.
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, errors="replace", timeout=600
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
    listing.write_text("ct1.nii.gz\nct2.nii.gz\nmissing.nii.gz\nct3.nii.gz\nbroken.nii.gz\n")
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
    rows = json.loads((tmp_path / "stats.json").read_text())["segments"]
    assert {row["case"] for row in rows} == {"ct1", "ct2"}

    again = torchrun(*options, cwd=tmp_path)
    text = again.stdout + again.stderr
    assert again.returncode != 0
    assert "summary: 0 done, 3 skipped (output exists; --overwrite redoes them), 2 failed" in text
    assert "note: model " not in text  # nothing left that needs the network

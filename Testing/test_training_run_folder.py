"""A training run's folder is never damaged, and a run says truthfully what it kept (issue 20,
points 22, 25, 26, 27, 29, 31): real ``training.train`` processes on two real BraTS 2013 cases at
6 mm with a tiny network, a few steps each.

One run is followed through: planned at 6 mm, fold 1 of a two-case dataset (one training case
fills a batch of two), stopped after one step; refused reruns leave its folder byte for byte; the
resume continues with the run's own plan; an edit of that plan is refused. Then a run whose loss
becomes NaN stops and keeps what it saved, and an interrupt before the first save says so.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers_owndata import coarse_cases, one_error_line, snapshot, write_dataset

from segresmamba.errors import EXIT_INTERRUPTED, EXIT_MODEL, EXIT_USAGE
from segresmamba.weights import load_checkpoint, read_header
from training.state import read_progress

REPO = Path(__file__).resolve().parents[1]
TINY = ["--network", '{"widths": [8, 16, 32, 64]}', "--threads", "2"]


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": f"{REPO / 'SegResMambaSlicer'}{os.pathsep}{REPO}",
        "PYTHONWARNINGS": "ignore",
    }


def train(*args) -> subprocess.CompletedProcess:
    """``python -m training.train ARGS`` as a user runs it, output decoded as UTF-8."""
    return subprocess.run(
        [sys.executable, "-m", "training.train", *map(str, args)], env=_env(),
        capture_output=True, encoding="utf-8", errors="replace", timeout=600,
    )  # fmt: skip


@pytest.fixture(scope="module")
def dataset(shared_data: Path, tmp_path_factory) -> Path:
    brats = shared_data / "brats2013-2ch"
    cases = coarse_cases(brats, ("BRATS13_001", "BRATS13_002"))
    return write_dataset(tmp_path_factory.mktemp("two") / "data", cases, brats)


@pytest.fixture(scope="module")
def plan(dataset: Path) -> Path:
    out = dataset.parent / "plan.json"
    result = subprocess.run(
        [sys.executable, "-m", "training.plan", str(dataset), "--out", str(out), "--spacing", "6"],
        env=_env(), capture_output=True, encoding="utf-8", timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def stopped(dataset: Path, plan: Path) -> Path:
    """Fold 1 of the two-case dataset, stopped after step 1 of 2."""
    out = dataset.parent / "run"
    result = train(
        "--dataset", dataset, "--plan", plan, "--fold", 1, "--out", out, "--max-steps", 2,
        "--val-every", 1, "--stop-after", 1, *TINY,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 training / 1 validation cases" in result.stdout  # point 29: one case fills a batch
    assert "stopped at step 1 of 2" in result.stdout
    return out


def test_refused_runs_leave_the_run_folder_as_it_was(stopped: Path, dataset, plan) -> None:
    before = snapshot(stopped)
    edited = json.loads(plan.read_text(encoding="utf-8"))
    edited["task"]["spacing_mm"] = [2.5, 2.5, 2.5]
    (plan.parent / "edited.json").write_text(json.dumps(edited), encoding="utf-8")
    invalid = edited | {"folds": {"count": 1, "seed": 0, "case_fold": {"BRATS13_001": 0}}}
    (plan.parent / "invalid.json").write_text(json.dumps(invalid), encoding="utf-8")
    unusable = edited | {"training": edited["training"] | {"steps": "many"}}
    (plan.parent / "unusable.json").write_text(json.dumps(unusable), encoding="utf-8")
    base = ["--dataset", dataset, "--fold", 1, "--out", stopped, "--max-steps", 2, *TINY]
    refusals = {
        "already holds a run": [],
        "different settings (lr)": ["--resume", "--lr", "0.5", "--plan", plan],
        "differs from the run's own": ["--resume", "--plan", plan.parent / "edited.json"],
        "fold 1 is not in the plan": ["--plan", plan.parent / "invalid.json", "--out", stopped / "x"],
        "unusable 'training'": ["--plan", plan.parent / "unusable.json", "--out", stopped / "y"],
    }  # fmt: skip
    for words, extra in refusals.items():
        result = train(*base, *extra)
        one_error_line(result, EXIT_USAGE, words)
        assert snapshot(stopped) == before, words  # checked before anything is written


def test_resume_continues_with_the_runs_own_plan(stopped: Path, dataset) -> None:
    own = (stopped / "plan.json").read_bytes()
    # no --plan: training.plan would plan the dataset afresh (at its 1 mm median spacing)
    result = train("--dataset", dataset, "--fold", 1, "--out", stopped, "--max-steps", 2,
                   "--val-every", 1, "--resume", *TINY)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (stopped / "plan.json").read_bytes() == own
    header = read_header(stopped / "best.safetensors")
    assert header["plan"]["task"]["spacing_mm"] == [6.0, 6.0, 6.0]
    # point 31: the end line counts seconds, and the bar's best= is the last validation's best
    done = re.search(r"done: 2 steps in (\d+) s; best validation mean Dice ([\d.]+)", result.stdout)
    assert done, result.stdout
    assert re.findall(r"best=([\d.]+)", result.stderr)[-1] == done.group(2)

    edited = json.loads(own) | {"spacing_rule": "edited by hand"}
    (stopped / "plan.json").write_text(json.dumps(edited), encoding="utf-8")
    try:
        result = train("--dataset", dataset, "--fold", 1, "--out", stopped, "--max-steps", 2,
                       "--resume", *TINY)  # fmt: skip
        one_error_line(result, EXIT_USAGE, "plan.json was changed")
    finally:
        (stopped / "plan.json").write_bytes(own)


def test_a_nan_loss_stops_the_run_and_keeps_what_was_saved(dataset: Path, plan: Path) -> None:
    out = dataset.parent / "diverged"
    result = train(
        "--dataset", dataset, "--plan", plan, "--fold", "all", "--out", out, "--max-steps", 4,
        "--val-every", 1, "--save-every", 1, "--batch-size", 1, "--lr", "1e12", "--progress-json", *TINY,
    )  # fmt: skip
    line = one_error_line(result, EXIT_MODEL, "the loss became", "training stopped")
    broke = int(re.search(r"at step (\d+)", line).group(1))
    assert 1 < broke <= 4, line
    saved = read_progress(out / "resume.safetensors")["progress"]["step"]
    assert saved == broke - 1 and f"the state saved at step {saved}" in line
    load_checkpoint(out / "best.safetensors")  # kept, and its weights are finite
    rows = (out / "log.csv").read_text(encoding="utf-8").strip().splitlines()[1:]
    assert len(rows) == broke - 1 and "nan" not in "".join(rows).lower()


def test_an_interrupt_before_the_first_save_says_nothing_was_saved(dataset, plan) -> None:
    out = dataset.parent / "interrupted"
    command = [sys.executable, "-m", "training.train", "--dataset", str(dataset), "--plan",
               str(plan), "--fold", "all", "--out", str(out), "--max-steps", "1000",
               "--save-every", "1000", "--val-every", "1000", "--progress-json", *TINY]  # fmt: skip
    child = subprocess.Popen(
        command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, encoding="utf-8"
    )
    try:
        for line in child.stdout:  # the first step is done: training runs, nothing saved yet
            if line.startswith("{") and json.loads(line)["step"] >= 1:
                break
        child.send_signal(signal.SIGINT)
        try:
            _, stderr = child.communicate(timeout=60)
        except subprocess.TimeoutExpired:  # seen once in ~10 runs: a lost SIGINT (own issue);
            child.send_signal(signal.SIGINT)  # a user presses Ctrl+C again
            _, stderr = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == EXIT_INTERRUPTED, stderr
    assert "nothing was saved yet" in stderr and "without --resume" in stderr, stderr
    assert not (out / "resume.safetensors").exists()

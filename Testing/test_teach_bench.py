"""The teach-loop benchmark: its summary arithmetic and targets, and one short real loop (round 0,
one fine-tune round with its from-scratch twin) on coarse real gliomas with manual labels."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers_owndata import coarse_cases, write_dataset

from segresmamba.weights import read_header
from training.teach_summary import summarise, unseen_whole

REPO = Path(__file__).resolve().parents[1]


def _record(minutes: float, steps: int, unseen: list[float], holdout: list[float] = ()) -> dict:
    return {
        "wall_seconds": minutes * 60,
        "wall_minutes": minutes,
        "steps": steps,
        "peak_rss_mb": 1000.0,
        "unseen": [{"case": f"u{i}", "whole_foreground": v} for i, v in enumerate(unseen)],
        "holdout": [{"case": f"h{i}", "whole_foreground": v} for i, v in enumerate(holdout)],
    }


def _run(seed: int, tuned: list[float], scratch: list[float], minutes=(2.0, 9.0)) -> dict:
    return {
        "model": "segresmamba",
        "seed": seed,
        "rounds": [
            {"round": 0, "scratch": _record(6.0, 300, [0.5, 0.6])},
            {
                "round": 1,
                "added_case": "u0",
                "before_correction": {"case": "u0", "whole_foreground": 0.5},
                "finetuned": _record(minutes[0], 100, tuned),
                "scratch": _record(minutes[1], 400, scratch),
            },
        ],
    }


def test_unseen_whole_takes_not_yet_added_and_holdout_cases_and_skips_nan() -> None:
    assert unseen_whole(_record(1, 1, [0.2, math.nan], [0.6])) == pytest.approx(0.4)
    assert unseen_whole(_record(1, 1, [math.nan])) is None


def test_summary_meets_targets_only_over_two_seeds() -> None:
    one = summarise([_run(0, [0.80], [0.79])])["segresmamba"]
    assert one["mean_difference"] == pytest.approx(0.01)
    assert one["targets"]["last_round_time_ratio"]["value"] == pytest.approx(2 / 9, abs=1e-3)
    assert one["targets"]["last_round_time_ratio"]["met"]
    assert not one["targets"]["last_round_dice_gap"]["met"]  # a single seed proves nothing
    two = summarise([_run(0, [0.80], [0.79]), _run(1, [0.70], [0.75])])["segresmamba"]
    assert two["mean_difference"] == pytest.approx((0.01 - 0.05) / 2)
    assert two["targets"]["last_round_dice_gap"]["met"]  # |-0.02| <= 0.03
    worse = summarise([_run(0, [0.70], [0.80]), _run(1, [0.70], [0.80])])["segresmamba"]
    assert not worse["targets"]["last_round_dice_gap"]["met"]
    slow = summarise([_run(0, [0.8], [0.8], minutes=(7.0, 9.0))])["segresmamba"]
    assert not slow["targets"]["finetune_round_minutes"]["met"]
    assert not slow["targets"]["last_round_time_ratio"]["met"]
    assert slow["before_correction_whole"] == [{"seed": 0, "round": 1, "case": "u0", "dice": 0.5}]


def test_a_real_short_loop_scores_each_round(tmp_path: Path, shared_data: Path) -> None:
    """Three coarse real gliomas, round 0 on one, one round that adds the second and scores the
    third: the added case's before-correction Dice is the previous model's Dice on it, the fine-
    tune starts from round 0's model and the from-scratch twin gets the same step budget."""
    brats = shared_data / "brats2013-2ch"
    source = write_dataset(tmp_path / "source", coarse_cases(brats), brats)
    out = tmp_path / "teach.json"
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'SegResMambaSlicer'}{os.pathsep}{REPO}"}
    command = [
        sys.executable, "-m", "training.teach_bench", "--dataset", str(source), "--start", "1",
        "--out", str(out), "--work", str(tmp_path / "work"), "--steps", "2",
        "--finetune-steps", "1", "--seeds", "3", "--models", "segresmamba",
        "--network", '{"widths": [8, 16, 32, 64]}',
    ]  # fmt: skip
    options = dict(cwd=REPO, env=env, capture_output=True, encoding="utf-8", timeout=600)
    result = subprocess.run(command, **options)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    report = json.loads(out.read_text(encoding="utf-8"))
    (run,) = report["runs"]
    first, second = run["rounds"]
    assert first["trained_cases"] == ["BRATS13_001"]
    assert [r["case"] for r in first["scratch"]["unseen"]] == ["BRATS13_002", "BRATS13_003"]
    assert second["added_case"] == "BRATS13_002"
    assert second["before_correction"] == first["scratch"]["unseen"][0]
    assert [r["case"] for r in second["finetuned"]["unseen"]] == ["BRATS13_003"]
    assert (first["scratch"]["steps"], second["finetuned"]["steps"]) == (2, 1)
    assert second["scratch"]["steps"] == 3  # the same budget as round 0 + the fine-tune
    for record in (second["finetuned"], second["scratch"]):
        assert record["peak_rss_mb"] > 100 and record["wall_seconds"] > 0
        assert 0.0 <= record["unseen"][0]["whole_foreground"] <= 1.0
        assert set(record["unseen"][0]) >= {"case", "whole_foreground", "edema"}
    header = read_header(tmp_path / "work/segresmamba-seed3/round1-finetune/best.safetensors")
    assert Path(header["provenance"]["init_from"]["path"]).parent.name == "round0"
    assert header["provenance"]["cases"] == 2
    training_set = tmp_path / "work/segresmamba-seed3/training-set"
    assert sorted(p.name for p in (training_set / "labelsTr").iterdir()) == [
        "BRATS13_001.nii.gz",
        "BRATS13_002.nii.gz",
    ]
    summary = report["summary"]["segresmamba"]
    assert summary["last_round"][0]["round"] == 1
    assert not summary["targets"]["last_round_dice_gap"]["met"]  # one seed

    # Stopped after round 0: --resume keeps round 0 as measured and plays round 1 again.
    del run["rounds"][1]
    out.write_text(json.dumps(report), encoding="utf-8")
    shutil.rmtree(tmp_path / "work/segresmamba-seed3/round1-finetune")
    resumed = subprocess.run(command + ["--resume"], **options)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    again = json.loads(out.read_text(encoding="utf-8"))
    (run_again,) = again["runs"]
    assert run_again["rounds"][0] == first
    assert run_again["rounds"][1]["added_case"] == "BRATS13_002"
    assert run_again["rounds"][1]["scratch"]["steps"] == 3
    assert len(again["resumed"]) == 1 and again["date"] == report["date"]
    assert sorted(p.name for p in (training_set / "labelsTr").iterdir()) == [
        "BRATS13_001.nii.gz",
        "BRATS13_002.nii.gz",
    ]
    # Finished: nothing is trained again. Other settings: refused in one line.
    done = subprocess.run(command + ["--resume"], **options)
    assert done.returncode == 0 and "done earlier" in done.stdout
    changed = list(command)
    changed[changed.index("--finetune-steps") + 1] = "2"
    refused = subprocess.run(changed + ["--resume"], **options)
    assert refused.returncode != 0
    assert (
        refused.stderr.strip() == f"error: cannot resume from {out}: its --finetune-steps "
        "differs from this run's"
    )

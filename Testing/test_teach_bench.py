"""The teach-loop benchmark: its summary arithmetic and targets, and one short real loop (round 0,
one fine-tune round with its from-scratch twin) on coarse real gliomas with manual labels."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

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

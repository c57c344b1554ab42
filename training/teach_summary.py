"""The teach-loop benchmark's summary: per model, the last round against training from scratch,
over seeds, and the issue's targets with whether each was met.

Kept apart from ``training.teach_bench`` (which plays the loop) so the numbers a reader sees in
docs/benchmarks.md come from one small, tested function of the JSON alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import mean
from typing import Any

__all__ = ["TARGETS", "summarise", "unseen_whole"]

TARGETS = {
    "finetune_minutes": 6.0,
    "time_ratio": 1 / 3,
    "dice_gap": 0.03,
}
"""A fine-tune round at the plan's default length within 6 min; the last round at most a third
of the wall time of training from scratch on the same cases; its mean whole-tumour Dice on the
unseen cases within 0.03 of the from-scratch model's, over at least two seeds."""

WHOLE = "whole_foreground"


def unseen_whole(record: dict[str, Any]) -> float | None:
    """Mean whole-foreground Dice of a model over every case it never trained on (the cases not
    yet added, and the hold-out cases)."""
    values = [r[WHOLE] for r in record["unseen"] + record["holdout"] if not math.isnan(r[WHOLE])]
    return mean(values) if values else None


def _last_round(run: dict[str, Any]) -> dict[str, Any] | None:
    last = run["rounds"][-1] if len(run["rounds"]) > 1 else None
    if last is None or "scratch" not in last:
        return None
    tuned, scratch = last["finetuned"], last["scratch"]
    a, b = unseen_whole(tuned), unseen_whole(scratch)
    return {
        "seed": run["seed"],
        "round": last["round"],
        "finetune_minutes": tuned["wall_minutes"],
        "scratch_minutes": scratch["wall_minutes"],
        "time_ratio": round(tuned["wall_seconds"] / scratch["wall_seconds"], 3),
        "finetuned_unseen_whole": a,
        "scratch_unseen_whole": b,
        "difference": None if a is None or b is None else round(a - b, 4),
    }


def _model_summary(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    tuned = [r["finetuned"] for run in runs for r in run["rounds"] if "finetuned" in r]
    before = [
        {"seed": run["seed"], "round": r["round"], "case": r["added_case"], "dice": r[
            "before_correction"][WHOLE]}
        for run in runs
        for r in run["rounds"]
        if "before_correction" in r
    ]  # fmt: skip
    last = [row for row in (_last_round(run) for run in runs) if row is not None]
    differences = [row["difference"] for row in last if row["difference"] is not None]
    return {
        "seeds": [run["seed"] for run in runs],
        "finetune_minutes": [t["wall_minutes"] for t in tuned],
        "finetune_steps": sorted({t["steps"] for t in tuned}),
        "finetune_peak_rss_mb": max((t["peak_rss_mb"] for t in tuned), default=None),
        "before_correction_whole": before,
        "last_round": last,
        "mean_difference": round(mean(differences), 4) if differences else None,
        "max_time_ratio": max((row["time_ratio"] for row in last), default=None),
    }


def _targets(model: dict[str, Any]) -> dict[str, Any]:
    minutes = max(model["finetune_minutes"], default=None)
    gap = model["mean_difference"]
    return {
        "finetune_round_minutes": {
            "value": minutes,
            "target": TARGETS["finetune_minutes"],
            "met": minutes is not None and minutes <= TARGETS["finetune_minutes"],
        },
        "last_round_time_ratio": {
            "value": model["max_time_ratio"],
            "target": round(TARGETS["time_ratio"], 4),
            "met": model["max_time_ratio"] is not None
            and model["max_time_ratio"] <= TARGETS["time_ratio"],
        },
        "last_round_dice_gap": {
            "value": gap,
            "target": TARGETS["dice_gap"],
            "seeds": len(model["last_round"]),
            "met": gap is not None
            and len(model["last_round"]) >= 2
            and abs(gap) <= TARGETS["dice_gap"],
        },
    }


def summarise(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per model: fine-tune minutes, before-correction Dice, the last round against scratch for
    each seed and on average, and the targets (met or not; a gap over one seed is never met)."""
    models: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        if run["rounds"]:
            models.setdefault(run["model"], []).append(run)
    summary = {name: _model_summary(group) for name, group in models.items()}
    for model in summary.values():
        model["targets"] = _targets(model)
    return summary

"""``python -m training.own_data_bench``: SegResMamba vs MONAI SegResNet on your own dataset.

Plans the dataset once (``training.plan``, CPU defaults unless told), then trains SegResMamba and
SegResNet with that same plan, steps, fold and budget through ``training.train --dataset``, each
as its own process (wall time and peak RSS measured per process with ``os.wait4``), and scores
the final model of each run (no checkpoint picked on the validation case) on the validation
case(s): Dice per label and whole-foreground Dice (all labels merged: the whole tumour for BraTS),
on the working grid that validation uses. Writes everything as one JSON file::

    python -m training.own_data_bench --dataset ../shared/data/brats2013-2ch --fold 0 \\
        --steps 1500 --out docs/benchmarks/2026-12-02-own-data-cpu.json

Run folders (weights, logs) go to ``--work`` (default: ``segresmamba-own-data-bench`` in the
system's temporary folder, outside the repository): weights trained on non-commercial data such
as BraTS must never be committed.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .bench_runs import machine_info, run_measured

__all__ = ["main", "score_run"]

MODELS = ("segresmamba", "segresnet")


def score_run(run: Path, model_name: str, dataset_folder: Path, fold: int) -> dict[str, Any]:
    """Dice of the run's final model on the fold's validation cases (working grid)."""
    from segresmamba.datasets import load_dataset

    from .bench_runs import load_final_model, score_entries
    from .own_data import own_split
    from .plan import read_plan

    task, model = load_final_model(run, model_name)
    _, validation, _ = own_split(read_plan(run / "plan.json"), load_dataset(dataset_folder), fold)
    cases = score_entries(task, model, validation)
    log = (run / "log.csv").read_text(encoding="utf-8").strip().splitlines()
    header = log[0].split(",")
    column = header.index("val_mean")
    best = [float(r.split(",")[column]) for r in log[1:] if r.split(",")[column] not in ("", "nan")]
    return {
        "cases": cases,
        "best_validation_mean_dice_during_training": max(best) if best else None,
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.own_data_bench", description=__doc__)
    p.add_argument("--dataset", required=True, help="nnU-Net v2 dataset folder")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--steps", type=int, required=True, help="training steps for each model")
    p.add_argument("--out", required=True, help="JSON result file")
    p.add_argument("--work", help="run folders (default: TMP/segresmamba-own-data-bench)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--memory-gb", type=float, help="plan budget (default: the planner's)")
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    work = Path(args.work or Path(tempfile.gettempdir()) / "segresmamba-own-data-bench")
    work.mkdir(parents=True, exist_ok=True)
    python = [sys.executable, "-m"]
    plan_path = work / "plan.json"
    plan_cmd = python + ["training.plan", args.dataset, "--out", str(plan_path)]
    plan_cmd += ["--device", args.device, "--steps", str(args.steps), "--seed", str(args.seed)]
    if args.memory_gb:
        plan_cmd += ["--memory-gb", str(args.memory_gb)]
    result: dict[str, Any] = {
        "benchmark": "own data: SegResMamba vs MONAI SegResNet, same plan, steps and budget",
        "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "machine": machine_info(),
        "dataset": str(Path(args.dataset).resolve()),
        "fold": args.fold,
        "steps": args.steps,
        "planning": run_measured(plan_cmd, work / "plan.log"),
        "runs": {},
    }
    if result["planning"]["exit_status"] != 0:
        print((work / "plan.log").read_text(encoding="utf-8"), file=sys.stderr)
        return result["planning"]["exit_status"]
    result["plan"] = json.loads(plan_path.read_text(encoding="utf-8"))
    for name in args.models:
        run = work / name
        command = python + ["training.train", "--dataset", args.dataset, "--plan", str(plan_path)]
        command += ["--fold", str(args.fold), "--model", name, "--out", str(run)]
        command += ["--device", args.device, "--seed", str(args.seed)]
        record = run_measured(command, work / f"{name}.log")
        print(f"{name}: exit {record['exit_status']}, {record['wall_seconds'] / 60:.1f} min, "
              f"peak {record['peak_rss_mb']:.0f} MB", flush=True)  # fmt: skip
        if record["exit_status"] == 0:
            record.update(score_run(run, name, Path(args.dataset), args.fold))
            record["seconds_per_step"] = round(record["wall_seconds"] / args.steps, 3)
        result["runs"][name] = record
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    for name, record in result["runs"].items():
        for case in record.get("cases", []):
            print(f"{name} {case['case']}: whole-foreground Dice {case['whole_foreground']:.3f}; "
                  + ", ".join(f"{k} {v:.3f}" for k, v in case.items()
                              if k not in ("case", "whole_foreground")))  # fmt: skip
    print(f"-> {out}")
    return 0 if all(r["exit_status"] == 0 for r in result["runs"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())

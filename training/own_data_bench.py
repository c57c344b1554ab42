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
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main", "score_run"]

MODELS = ("segresmamba", "segresnet")


def _run(command: list[str], log: Path) -> dict[str, Any]:
    """Run ``command``; (exit status, wall seconds, peak RSS MB of that process)."""
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return {
        "command": " ".join(command),
        "exit_status": process.returncode,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux: kilobytes
        # CPU time of the process (all threads): on a busy machine, wall time says little
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "log": str(log),
    }


def _dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    total = prediction.sum() + truth.sum()
    return float(2 * np.logical_and(prediction, truth).sum() / total) if total else float("nan")


def score_run(run: Path, model_name: str, dataset_folder: Path, fold: int) -> dict[str, Any]:
    """Dice of the run's final model on the fold's validation cases (working grid)."""
    import safetensors.torch
    import torch

    from segresmamba.datasets import load_dataset
    from segresmamba.inference import predict
    from segresmamba.tasks import task_from_dict

    from .own_data import build_model, own_split
    from .plan import read_plan
    from .transforms import deterministic_transforms

    plan = read_plan(run / "plan.json")
    task = task_from_dict(plan["task"])
    tensors = safetensors.torch.load_file(str(run / "resume.safetensors"))
    weights = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    model = build_model(model_name, task, plan["task"]["network"])
    model.load_state_dict(weights)
    model.eval()
    _, validation, _ = own_split(plan, load_dataset(dataset_folder), fold)
    names = [label.name for label in task.foreground_labels]
    cases = []
    for entry in validation:
        item = dict(entry)
        for transform in deterministic_transforms(task, crop_foreground=False, own_data=True):
            item = transform(item)
        with torch.no_grad():
            probabilities = predict(
                item["image"], model, task.output, task.patch_size, torch.device("cpu")
            )
        truth = np.asarray(item["label"])
        if task.output == "softmax":
            predicted, truth_map = probabilities.argmax(0).numpy(), truth[0].round().astype(int)
            values = [label.value for label in task.foreground_labels]
        else:
            predicted = task.labelmap.from_regions(probabilities.numpy() > 0.5)
            truth_map = task.labelmap.from_regions(truth > 0.5)
            values = list(task.labelmap.values())
            names = [label.name for label in task.labelmap.labels]
        row = {"case": entry["case"], "whole_foreground": _dice(predicted > 0, truth_map > 0)}
        for name, value in zip(names, values):
            row[name] = _dice(predicted == value, truth_map == value)
        cases.append(row)
    log = (run / "log.csv").read_text(encoding="utf-8").strip().splitlines()
    header = log[0].split(",")
    column = header.index("val_mean")
    best = [float(r.split(",")[column]) for r in log[1:] if r.split(",")[column] not in ("", "nan")]
    return {
        "cases": cases,
        "best_validation_mean_dice_during_training": max(best) if best else None,
    }


def _machine() -> dict[str, Any]:
    import torch

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model or platform.processor(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_average_at_start": list(os.getloadavg()),
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
        "machine": _machine(),
        "dataset": str(Path(args.dataset).resolve()),
        "fold": args.fold,
        "steps": args.steps,
        "planning": _run(plan_cmd, work / "plan.log"),
        "runs": {},
    }
    if result["planning"]["exit_status"] != 0:
        print((work / "plan.log").read_text(), file=sys.stderr)
        return result["planning"]["exit_status"]
    result["plan"] = json.loads(plan_path.read_text(encoding="utf-8"))
    for name in args.models:
        run = work / name
        command = python + ["training.train", "--dataset", args.dataset, "--plan", str(plan_path)]
        command += ["--fold", str(args.fold), "--model", name, "--out", str(run)]
        command += ["--device", args.device, "--seed", str(args.seed)]
        record = _run(command, work / f"{name}.log")
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

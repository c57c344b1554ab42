"""What the own-data benchmarks share: a training process measured on its own (wall time, CPU
time, peak RSS), the record of the machine, and the scoring of a run's final model.

``training.own_data_bench`` (SegResMamba vs SegResNet on one split) and ``training.teach_bench``
(the teach loop, round by round) both use them, so their numbers are measured and scored alike.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["dice", "load_final_model", "machine_info", "run_measured", "score_entries"]


def run_measured(command: list[str], log: Path) -> dict[str, Any]:
    """Run ``command`` with its output in ``log``: exit status, wall seconds, peak RSS (MB) and
    CPU seconds of that process alone (``os.wait4``), so each training is measured apart."""
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


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two masks; NaN when both are empty (left out of means, not counted as 1)."""
    total = prediction.sum() + truth.sum()
    return float(2 * np.logical_and(prediction, truth).sum() / total) if total else float("nan")


def load_final_model(run: Path, model_name: str):
    """(task, model) of a run's **final** weights (``resume.safetensors``), in eval mode: the
    benchmarks score the model a run ends with, never one picked on the cases scored."""
    import safetensors.torch

    from segresmamba.tasks import task_from_dict

    from .own_data import build_model
    from .plan import read_plan

    plan = read_plan(run / "plan.json")
    task = task_from_dict(plan["task"])
    tensors = safetensors.torch.load_file(str(run / "resume.safetensors"))
    weights = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    model = build_model(model_name, task, plan["task"]["network"])
    model.load_state_dict(weights)
    return task, model.eval()


def score_entries(task, model, entries: Sequence[dict]) -> list[dict[str, Any]]:
    """Dice per label and whole-foreground Dice (all labels merged: the whole tumour for BraTS)
    of ``model`` on each case, on the working grid that validation uses."""
    import torch

    from segresmamba.inference import predict

    from .transforms import deterministic_transforms

    names = [label.name for label in task.foreground_labels]
    rows = []
    for entry in entries:
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
        row = {"case": entry["case"], "whole_foreground": dice(predicted > 0, truth_map > 0)}
        for name, value in zip(names, values):
            row[name] = dice(predicted == value, truth_map == value)
        rows.append(row)
    return rows


def machine_info() -> dict[str, Any]:
    """The CPU, threads, software and load a benchmark ran with, for its JSON record."""
    import torch

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
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

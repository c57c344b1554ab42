"""The parent side: start one fresh process per measurement, collect their JSON, add ratios.

A fresh process per model is what makes the peak RSS (``ru_maxrss``, which never goes down)
belong to that model alone, and keeps one model's allocator state and thread pools from
flattering or penalising the next.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .models import MODELS, REFERENCE_MODEL
from .options import Settings, worker_argv

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
"""The folder that holds the ``segresmamba`` package (put on the workers' PYTHONPATH)."""

RATIO_FIELDS = (
    "params",
    "macs",
    "forward_s_median",
    "peak_rss_gb",
    "train_step_s_median",
    "train_peak_rss_gb",
)


class WorkerError(RuntimeError):
    """A measurement process failed; the message is its last error line."""


def log(message: str) -> None:
    """A progress line on stderr (stdout stays for the summary)."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


def _worker_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = str(PACKAGE_ROOT) + (os.pathsep + path if path else "")
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(threads)
    return env


def run_worker_process(settings: Settings, kind: str, model: str | None, size) -> dict:
    """Run one measurement in a fresh ``python -m segresmamba.bench --worker`` process."""
    command = [sys.executable, "-m", "segresmamba.bench"] + worker_argv(settings, kind, model, size)
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            encoding="utf-8",
            env=_worker_env(settings.threads),
            timeout=settings.timeout or None,
        )
    except subprocess.TimeoutExpired:
        raise WorkerError(f"took longer than --timeout {settings.timeout:g} s") from None
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        errors = [line for line in done.stderr.strip().splitlines() if line.strip()]
        last = errors[-1] if errors else f"exit code {done.returncode}, no output"
        if done.returncode < 0 or done.returncode == 137:
            last = f"killed (signal {-done.returncode if done.returncode < 0 else 9}): {last}"
        raise WorkerError(last.strip())
    return json.loads(lines[-1])


def _fmt_size(size) -> str:
    return "x".join(str(s) for s in size)


def _entry(settings: Settings, name: str, size) -> dict:
    return {
        "model": name,
        "description": MODELS[name].description,
        "input": list(size),
        "in_channels": settings.in_channels,
        "out_channels": settings.out_channels,
        "batch": settings.batch,
    }


def _measure_model(settings: Settings, entry: dict, label: str) -> None:
    """Forward (and with ``--train`` training-step) figures of one model into ``entry``."""
    kinds = ("forward", "train") if settings.train else ("forward",)
    for kind in kinds:
        log(f"{label} {entry['model']} {_fmt_size(entry['input'])} {kind} ...")
        start = time.perf_counter()
        try:
            measured = run_worker_process(settings, kind, entry["model"], entry["input"])
        except WorkerError as error:
            entry.setdefault("errors", {})[kind] = str(error)
            log(f"    {kind} FAILED: {error}")
            continue
        measured.pop("threads", None)
        entry.update(measured)
        log(f"    {_progress_summary(kind, measured)} ({time.perf_counter() - start:.0f} s)")


def combine_rounds(rounds: list[dict]) -> dict:
    """One model's entries from several rounds as one: each median time is the median over the
    rounds (every round's kept in ``<name>_rounds``), each peak RSS the largest."""
    combined = dict(rounds[0])
    if len(rounds) == 1:
        return combined
    for key in rounds[0]:
        values = [r.get(key) for r in rounds]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            continue
        if key.endswith("_s_median"):
            combined[key] = statistics.median(values)
            combined[f"{key[: -len('_median')]}_rounds"] = values
        elif "rss" in key:
            combined[key] = max(values)
    errors = [r["errors"] for r in rounds if r.get("errors")]
    if errors:
        combined["errors"] = {k: v for e in errors for k, v in e.items()}
    return combined


def run_models(settings: Settings) -> list[dict]:
    """Forward (and with ``--train`` training-step) measurements of every model at every size,
    ``settings.rounds`` times, the models alternating in an order that rotates per round."""
    keys = [(size, name) for size in settings.sizes for name in settings.models]
    measured: dict[tuple, list[dict]] = {key: [] for key in keys}
    for number in range(settings.rounds):
        shift = number % len(keys) if keys else 0
        for index, key in enumerate(keys[shift:] + keys[:shift], start=1):
            entry = _entry(settings, key[1], key[0])
            label = f"[{index}/{len(keys)}]"
            if settings.rounds > 1:
                label = f"round {number + 1}/{settings.rounds} {label}"
            _measure_model(settings, entry, label)
            measured[key].append(entry)
    results = [combine_rounds(measured[key]) for key in keys]
    add_ratios(results)
    return results


def _progress_summary(kind: str, m: dict) -> str:
    if kind == "train":
        return (
            f"train step {m['train_step_s_median']:.2f} s (median), "
            f"peak RSS {m['train_peak_rss_gb']:.2f} GB"
        )
    return (
        f"{m['params'] / 1e6:.2f} M params, {m['macs'] / 1e9:.1f} GMACs, forward "
        f"{m['forward_s_median']:.2f} s (median), peak RSS {m['peak_rss_gb']:.2f} GB"
    )


def add_ratios(results: list[dict], reference: str = REFERENCE_MODEL) -> None:
    """``vs_<reference>``: each figure divided by the reference's at the same input, same run."""
    refs = {tuple(r["input"]): r for r in results if r["model"] == reference}
    for result in results:
        ref = refs.get(tuple(result["input"]))
        if ref is None or result is ref:
            continue
        ratios = {
            key: result[key] / ref[key]
            for key in RATIO_FIELDS
            if isinstance(result.get(key), (int, float)) and ref.get(key)
        }
        if ratios:
            result[f"vs_{reference}"] = ratios


def run_scan(settings: Settings) -> dict:
    """The scan micro-benchmark in its own fresh process (an ``error`` entry if it failed)."""
    log(
        f"scan: torch scan vs per-token loop, L={settings.scan_length} d={settings.scan_d} "
        f"n={settings.scan_n} (loop timed on {min(settings.scan_loop_tokens, settings.scan_length)}"
        " tokens, scaled) ..."
    )
    start = time.perf_counter()
    try:
        result = run_worker_process(settings, "scan", None, None)
    except WorkerError as error:
        log(f"    scan FAILED: {error}")
        return {"error": str(error)}
    log(
        f"    torch forward {result['torch_forward_s_median']:.2f} s, backward "
        f"{result['torch_backward_s_median']:.2f} s, loop {result['loop_s_scaled']:.1f} s "
        f"(scaled), x{result['speedup_vs_loop']:.1f} ({time.perf_counter() - start:.0f} s)"
    )
    return result

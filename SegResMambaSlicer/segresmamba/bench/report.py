"""Where results go: the run's JSON file and the regenerated section of docs/benchmarks.md.

The Markdown section between the markers is rebuilt from every ``docs/benchmarks/*-cpu*.json``
on each run, newest first, so the page always matches the JSON files and nothing is lost when a
run is repeated; text outside the markers is never touched.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
from pathlib import Path

from .models import REFERENCE_MODEL

START, END = "<!-- bench:cpu:start -->", "<!-- bench:cpu:end -->"

HEADER = f"""# Benchmarks

How the numbers on this page are made:

- Command: `segresmamba bench` (the same as `python -m segresmamba.bench`; `make bench`), with the
  options shown for each run. `--train` adds one training step per model (forward, MONAI
  DiceCELoss with softmax and one-hot labels, backward, AdamW step); `--scan` adds the
  selective-scan micro-benchmark.
- Each model runs in its own fresh Python process, which imports the same libraries (torch,
  MONAI) for every model, so the peak RSS (`ru_maxrss`) is that model's alone plus the same
  baseline; the RSS before the timed work is shown next to it.
- Times are the median of N timed runs after one warm-up, batch 1, CPU, the torch thread count
  shown, under `torch.inference_mode()` for the forward pass.
- MACs: `torch.utils.flop_counter.FlopCounterMode` FLOPs / 2 for one forward pass, plus, for
  SegResMamba, the selective scan counted analytically (the counter cannot see it):
  3 multiply-adds and 1 exp per token, inner channel and state element, per ToM direction.
- Models (`--models`): `segresmamba` (both ToMs per CMMB, the paper's model),
  `segresmamba-1tom` (`second_tom=False`), and MONAI peers as their tutorials build them: `unet`
  (channels 16-256, strides 2,2,2,2, 2 residual units, batch norm), `segresnet` (init_filters
  16; `segresnet32` on request), `unetr` (feature_size 16, hidden 768, img_size = input),
  `swinunetr` (feature_size 48). Peers are measured in the same run on the same machine; ratios
  are against SwinUNETR at the same input size in the same run.
- Scan micro-benchmark: the torch scan at stage 0's second ToM shape (L = 110,592, d_inner 96,
  d_state 16, batch 1), forward and backward, against a plain per-token PyTorch loop (in-place,
  one exp per token) timed on the first 8,192 tokens and scaled linearly to L, and the fused
  numba scan (forward, and forward + backward) on the same inputs.
- The reference runs, on a quiet machine: `segresmamba bench --train --scan` (96³) and
  `segresmamba bench --size 128 --suffix 128` (128³, forward).
- GB means GiB (2^30 bytes). The machine (CPU model, threads, load average) is recorded with
  every run, and the full results are in the linked JSON file.
- Only runs on a quiet machine count as figures; runs marked as smoke runs check the tool.

{START}
{END}
"""


def repo_docs_dir() -> Path:
    """The checkout's ``docs/`` (beside pyproject.toml), else ``./docs``."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "docs").is_dir():
            return parent / "docs"
    return Path.cwd() / "docs"


def json_path(docs_dir: Path, date: str, suffix: str = "") -> Path:
    """``docs/benchmarks/<YYYY-MM-DD>-cpu[-suffix].json``."""
    return docs_dir / "benchmarks" / f"{date}-cpu{'-' + suffix if suffix else ''}.json"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _memory_gb() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) * 1024 / (1 << 30), 1)
    except (OSError, ValueError):
        pass
    return None


def device_info(threads: int) -> dict:
    """The machine and software a run measured: enough to tell two runs apart."""
    import torch

    try:  # the version only: importing MONAI here would slow every run's start for nothing
        monai_version = importlib.metadata.version("monai")
    except importlib.metadata.PackageNotFoundError:
        monai_version = "not installed"
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    return {
        "kind": "cpu",
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "threads": threads,
        "memory_gb": _memory_gb(),
        "torch": torch.__version__,
        "monai": monai_version,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": load,
    }


def write_json(path: Path, data: dict, overwrite: bool = False) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; use --suffix, --out-json or --overwrite")
    _write_atomic(path, json.dumps(data, indent=2) + "\n")


def _write_atomic(path: Path, text: str) -> None:
    """The engine's one atomic write (``io.atomic``): the docs never hold a half-written file."""
    from ..io.atomic import atomic_output

    with atomic_output(path, overwrite=True) as temporary:
        temporary.write_text(text, encoding="utf-8")


def _num(value, fmt: str, scale: float = 1.0) -> str:
    return format(value / scale, fmt) if isinstance(value, (int, float)) else "–"


def _ratio_text(result: dict) -> str:
    ratios = result.get(f"vs_{REFERENCE_MODEL}", {})
    parts = [
        f"{label} ×{ratios[key]:.2f}"
        for key, label in (
            ("forward_s_median", "fwd time"),
            ("peak_rss_gb", "fwd mem"),
            ("train_step_s_median", "train time"),
            ("train_peak_rss_gb", "train mem"),
        )
        if key in ratios
    ]
    return ", ".join(parts) or "–"


def render_run(run: dict, link: str | None = None) -> str:
    """One run as a Markdown subsection: machine, command, statistic, the table."""
    device, settings = run["device"], run["settings"]
    title = f"### {run['date']}: {device['cpu']}, {device['threads']} threads"
    if settings.get("quick"):
        title += " (SMOKE RUN, --quick: checks the tool; do not quote these figures)"
    load = device.get("load_average_at_start")
    lines = [
        title,
        "",
        f"`{run['command']}`  ",
        f"{device['logical_cpus']} logical CPUs, {device.get('memory_gb')} GB RAM, torch "
        f"{device['torch']}, MONAI {device['monai']}, Python {device['python']}; load average "
        f"at start {load[0] if load else '?'}. Median of {settings['repeats']} timed runs after "
        f"{settings['warmup']} warm-up{_rounds_text(settings)}, batch {settings['batch']}, "
        f"{settings['in_channels']} in / {settings['out_channels']} out channels, each model in "
        "its own fresh process; all models below were measured in this same run."
        + (f" Full results: [{Path(link).name}]({link})." if link else ""),
        "",
    ]
    results = run.get("results", [])
    if results:
        lines += [
            "| model | input | params (M) | GMACs (scan) | forward s | peak RSS GB (before) "
            "| train step s | train peak RSS GB | vs SwinUNETR |",
            "|---|---|--:|--:|--:|--:|--:|--:|---|",
        ]
        for r in results:
            macs = _num(r.get("macs"), ".1f", 1e9)
            if r.get("scan_macs"):
                macs += f" ({r['scan_macs'] / 1e9:.2f})"
            rss = _num(r.get("peak_rss_gb"), ".2f")
            if "rss_before_gb" in r:
                rss += f" ({r['rss_before_gb']:.2f})"
            row = [
                r["model"] + (" **failed**" if r.get("errors") else ""),
                "×".join(str(s) for s in r["input"]),
                _num(r.get("params"), ".2f", 1e6),
                macs,
                _num(r.get("forward_s_median"), ".2f"),
                rss,
                _num(r.get("train_step_s_median"), ".2f"),
                _num(r.get("train_peak_rss_gb"), ".2f"),
                _ratio_text(r),
            ]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    scan = run.get("scan")
    if scan and "error" not in scan:
        shape = scan["shape"]
        lines += [
            f"Selective scan, batch {shape['batch']}, L = {shape['length']:,}, d_inner = "
            f"{shape['d_inner']}, d_state = {shape['d_state']} ({scan['what']}): torch scan "
            f"forward {scan['torch_forward_s_median']:.3f} s, backward "
            f"{scan['torch_backward_s_median']:.3f} s; per-token loop "
            f"{scan['loop_s_scaled']:.2f} s ({scan['loop_note']}), so the torch scan is "
            f"×{scan['speedup_vs_loop']:.1f} faster; added peak RSS "
            f"{scan['forward_added_rss_gb']:.3f} GB forward, "
            f"{scan['backward_added_rss_gb']:.3f} GB forward + backward.",
            "",
        ]
        if "numba_forward_s_median" in scan:
            lines += [
                f"Fused numba scan on the same inputs ({scan.get('threads', '?')} threads, median "
                f"of {scan.get('repeats', '?')}): forward {scan['numba_forward_s_median']:.3f} s, "
                f"forward + backward {scan['numba_forward_backward_s_median']:.3f} s (torch "
                f"{scan['torch_forward_backward_s_median']:.3f} s); largest difference to the "
                f"torch scan {scan['numba_vs_torch_max_abs_diff']:.1e}{_numba_memory(scan)}.",
                "",
            ]
        elif "numba_error" in scan:
            lines += [f"Fused numba scan not measured: {scan['numba_error']}", ""]
    elif scan:
        lines += [f"Selective scan benchmark failed: {scan['error']}", ""]
    return "\n".join(lines)


def _numba_memory(scan: dict) -> str:
    """The fused scan's added peak RSS, where the run measured it (runs after 2026-12-06)."""
    forward = scan.get("numba_forward_added_rss_gb")
    both = scan.get("numba_forward_backward_added_rss_gb")
    if forward is None or both is None:
        return ""
    return f"; added peak RSS {forward:.3f} GB forward, {both:.3f} GB forward + backward"


def _load_runs(bench_dir: Path) -> list[tuple[dict, Path]]:
    runs = []
    for path in sorted(bench_dir.glob("*-cpu*.json")):
        try:
            run = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(run, dict) and "settings" in run:  # this tool's runs, not e.g. e2e's
            runs.append((run, path))
    return runs


def regenerate_markdown(docs_dir: Path) -> Path:
    """Rebuild the marked section of ``docs/benchmarks.md`` from the run files, newest first."""
    md = docs_dir / "benchmarks.md"
    text = md.read_text(encoding="utf-8") if md.exists() else HEADER
    if START not in text or END not in text or text.index(START) > text.index(END):
        text = text.rstrip("\n") + f"\n\n{START}\n{END}\n"
    runs = _load_runs(docs_dir / "benchmarks")
    runs.sort(key=lambda item: (item[0].get("date", ""), item[1].name), reverse=True)
    body = "\n".join(render_run(run, path.relative_to(docs_dir).as_posix()) for run, path in runs)
    before, rest = text.split(START, 1)
    after = rest.split(END, 1)[1]
    text = f"{before}{START}\n{body}{END}{after}"
    _write_atomic(md, text)
    return md


def _rounds_text(settings: dict) -> str:
    """ ", then the median of 3 alternating rounds" where a run had rounds (older JSON: none)."""
    rounds = settings.get("rounds", 1)
    if rounds <= 1:
        return ""
    return f", then the median over {rounds} rounds in which the models alternated"

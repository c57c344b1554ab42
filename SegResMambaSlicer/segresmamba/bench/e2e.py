"""End-to-end CPU benchmark: segment a real CT through the command line, as a user would.

``python -m segresmamba.bench.e2e`` times ``segresmamba segment`` (reading, RAS, resampling,
normalisation, sliding window, labels back on the input grid, writing) for each task and mode in
a fresh process per run, and records the wall time and the process's own peak RSS (from
``os.wait4``). Trained weights are not needed for timing: each task's checkpoint is its real
network with freshly initialised weights, saved in the engine's format.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
DEFAULT_IMAGE = REPO.parent / "shared" / "data" / "ct-abdomen" / "example_ct.nii.gz"
MARK_START, MARK_END = "<!-- bench:e2e:start -->", "<!-- bench:e2e:end -->"


def _checkpoint(task_name: str, folder: Path) -> Path:
    import torch

    from ..network import SegResMamba
    from ..tasks import get_task
    from ..weights import make_header, save_checkpoint

    task = get_task(task_name)
    torch.manual_seed(0)
    provenance = {"dataset": "none: random initial weights, for timing only"}
    path = folder / f"{task_name}-timing.safetensors"
    model = SegResMamba(**task.network_kwargs())
    save_checkpoint(path, model, make_header(task, provenance=provenance), overwrite=True)
    return path


def _run_once(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (GiB) of one child process; fails loudly on a non-zero exit."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(f"{shlex.join(command)} exited {process.returncode}: {stderr.strip()}")
    return elapsed, usage.ru_maxrss * 1024 / 2**30  # ru_maxrss is KiB on Linux


def windows(image: Path, task_name: str, mode: str, body_crop: bool) -> int:
    """How many sliding windows ``segment`` visits for this scan, task, mode and crop setting
    (the same working grid, body box and window rules as the pipeline)."""
    from ..inference import count_windows, prepare, window_size
    from ..inference.body import body_box, box_shape
    from ..inference.sliding import SINGLE_WINDOW_GROWTH
    from ..io import read_image
    from ..tasks import get_task

    task = get_task(task_name)
    scan = read_image(image)
    volume = prepare([scan], task, fast=mode == "fast")
    shape = tuple(int(s) for s in volume.shape[1:])
    box = body_box(scan, volume.affine, shape, task.patch_size)
    if body_crop and task.modality == "CT" and box is not None:
        shape = box_shape(box)
    growth = SINGLE_WINDOW_GROWTH if mode == "fast" else 1.0
    return count_windows(shape, window_size(task.patch_size, shape, growth), 0.25)


def measure(
    image: Path,
    tasks: Sequence[str],
    modes: Sequence[str],
    repeats: int,
    crops: Sequence[str] = ("on",),
) -> list[dict]:
    """Each task x mode x body-crop setting, ``repeats`` fresh processes each, interleaved
    settings within a task and mode so load changes hit them alike."""
    results = []
    with tempfile.TemporaryDirectory(prefix="segresmamba-e2e-") as scratch:
        scratch = Path(scratch)
        for task in tasks:
            checkpoint = _checkpoint(task, scratch)
            for mode in modes:
                command = [
                    sys.executable,
                    "-m",
                    "segresmamba",
                    "segment",
                    "-t",
                    task,
                    "-i",
                    str(image),
                    "-o",
                    str(scratch / "out.nii.gz"),
                    "--model",
                    str(checkpoint),
                    "--device",
                    "cpu",
                    "--quiet",
                    "--overwrite",
                ]
                command += ["--fast"] if mode == "fast" else []
                runs: dict[str, list] = {crop: [] for crop in crops}
                for attempt in range(repeats):
                    for crop in crops:
                        print(
                            f"e2e: {task} {mode} body crop {crop} run {attempt + 1}/{repeats}",
                            file=sys.stderr,
                        )
                        extra = ["--no-body-crop"] if crop == "off" else []
                        runs[crop].append(_run_once(command + extra))
                for crop in crops:
                    times = [wall for wall, _ in runs[crop]]
                    extra = ["--no-body-crop"] if crop == "off" else []
                    results.append(
                        {
                            "task": task,
                            "mode": mode,
                            "body_crop": crop,
                            "windows": windows(image, task, mode, crop == "on"),
                            "image": image.name,
                            "wall_s_median": statistics.median(times),
                            "wall_s_all": times,
                            "peak_rss_gb": max(rss for _, rss in runs[crop]),
                            "command": shlex.join(["segresmamba", *command[3:], *extra]),
                        }
                    )
    return results


def _markdown(run: dict) -> str:
    lines = [
        f"### {run['date']}: end to end, {run['device']['cpu']}, {run['device']['threads']} threads",
        "",
        f"`{run['command']}`  ",
        f"Median of {run['repeats']} runs, each a fresh `segresmamba segment` process on "
        f"`{run['results'][0]['image']}` ({run.get('image_grid', '')}), CPU; weights freshly "
        "initialised (timing does not depend on their values); peak RSS of the process itself. "
        f"Load average at start {run['device']['load_average']}.",
        "",
        "| task | mode | body crop | windows | wall s (median) | all runs s | peak RSS GB |",
        "|---|---|---|--:|--:|---|--:|",
    ]
    for r in run["results"]:
        all_runs = ", ".join(f"{t:.1f}" for t in r["wall_s_all"])
        lines.append(
            f"| {r['task']} | {r['mode']} | {r.get('body_crop', 'on')} | {r.get('windows', '')} "
            f"| {r['wall_s_median']:.1f} | {all_runs} | {r['peak_rss_gb']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def _write_markdown(path: Path, section: str) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    block = f"{MARK_START}\n{section}{MARK_END}"
    if MARK_START in text and MARK_END in text:
        before, rest = text.split(MARK_START, 1)
        text = before + block + rest.split(MARK_END, 1)[1]
    else:
        text = text.rstrip() + "\n\n## End to end (segment a real CT)\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m segresmamba.bench.e2e", description=__doc__)
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--tasks", default="btcv,spleen")
    parser.add_argument("--modes", default="normal,fast")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--body-crop",
        default="on",
        help="on, off or on,off: time CT tasks with the body crop, without it, or both in one run",
    )
    parser.add_argument("--out-json", type=Path, help="default docs/benchmarks/<date>-e2e-cpu.json")
    parser.add_argument("--no-write", action="store_true", help="leave docs/ alone")
    args = parser.parse_args(argv)
    if not args.image.exists():
        parser.error(f"image not found: {args.image}")
    crops = args.body_crop.split(",")
    if not crops or any(c not in ("on", "off") for c in crops):
        parser.error(f"--body-crop takes on, off or on,off; got {args.body_crop}")
    date = datetime.date.today().isoformat()
    argv_text = shlex.join(list(sys.argv[1:] if argv is None else argv))
    run = {
        "date": date,
        "command": f"python -m segresmamba.bench.e2e {argv_text}".strip(),
        "repeats": args.repeats,
        "image_grid": _grid_text(args.image),
        "device": {
            "cpu": _cpu_name(),
            "threads": os.cpu_count(),
            "platform": platform.platform(),
            "load_average": round(os.getloadavg()[0], 2),
        },
        "results": measure(
            args.image, args.tasks.split(","), args.modes.split(","), args.repeats, crops
        ),
    }
    print(_markdown(run))
    out_json = args.out_json or REPO / "docs" / "benchmarks" / f"{date}-e2e-cpu.json"
    if not args.no_write or args.out_json:
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")
    if not args.no_write:
        _write_markdown(REPO / "docs" / "benchmarks.md", _markdown(run))
    return 0


def _grid_text(image: Path) -> str:
    """ "122×101×112 voxels at 3×3×3 mm": what the scan is, for the table's caption."""
    from ..io import read_image

    scan = read_image(image)
    size = "×".join(str(n) for n in scan.GetSize())
    return f"{size} voxels at {'×'.join(f'{s:.3g}' for s in scan.GetSpacing())} mm"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    raise SystemExit(main())

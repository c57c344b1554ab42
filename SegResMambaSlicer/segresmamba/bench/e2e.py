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
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .e2e_process import Config, alternate, checkout, summary
from .full_size import FULL_SIZE_SPACING_MM, full_size_ct

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


def _configs(
    image: Path,
    checkpoints: dict[str, Path],
    modes: Sequence[str],
    crops: Sequence[str],
    codes: dict[str, Path | None],
    output: Path,
) -> list[Config]:
    """Every task x mode x body crop x code setting, as ``segment`` arguments."""
    configs = []
    for task, checkpoint in checkpoints.items():
        for mode in modes:
            for crop in crops:
                for code, root in codes.items():
                    arguments = ["-t", task, "-i", str(image), "-o", str(output)]
                    arguments += ["--model", str(checkpoint), "--device", "cpu", "--overwrite"]
                    arguments += ["--fast"] if mode == "fast" else []
                    arguments += ["--no-body-crop"] if crop == "off" else []
                    label = {"task": task, "mode": mode, "body crop": crop, "code": code}
                    configs.append(Config(label, tuple(arguments), root))
    return configs


def measure(
    image: Path,
    tasks: Sequence[str],
    modes: Sequence[str],
    rounds: int,
    crops: Sequence[str] = ("on",),
    baseline: str | None = None,
    warmup: int = 1,
) -> list[dict]:
    """Each task x mode x body crop (x this code and ``baseline``'s) setting in ``rounds``
    alternating rounds of fresh processes, after ``warmup`` untimed runs of each."""
    results = []
    with tempfile.TemporaryDirectory(prefix="segresmamba-e2e-") as scratch:
        scratch = Path(scratch)
        codes: dict[str, Path | None] = {"this": None}
        if baseline:
            codes = {baseline: checkout(baseline, scratch), "this": None}
        checkpoints = {task: _checkpoint(task, scratch) for task in tasks}
        configs = _configs(image, checkpoints, modes, crops, codes, scratch / "out.nii.gz")
        timings = alternate(configs, rounds, warmup)
        for config, timed in zip(configs, timings):
            label = config.label
            results.append(
                {
                    "task": label["task"],
                    "mode": label["mode"],
                    "body_crop": label["body crop"],
                    "code": label["code"],
                    "windows": windows(
                        image, label["task"], label["mode"], label["body crop"] == "on"
                    ),
                    "image": image.name,
                    **summary(timed),
                    "command": shlex.join(["segresmamba", *config.command()[3:]]),
                }
            )
    return results


def _markdown(run: dict) -> str:
    lines = [
        f"### {run['date']}: end to end, {run['device']['cpu']}, {run['device']['threads']} threads",
        "",
        f"`{run['command']}`  ",
        f"Median of {run['rounds']} alternating rounds (each setting once per round, in a "
        f"rotating order, after {run.get('warmup', 1)} untimed warm-up run each), each a fresh "
        f"`segresmamba segment` process on `{run['results'][0]['image']}` "
        f"({run.get('image_grid', '')}), CPU; weights freshly initialised (timing does not "
        "depend on their values); first progress: seconds from the process's start to its first "
        "progress event; peak RSS of the process itself. "
        f"Load average at start {run['device']['load_average']}.",
        "",
        "| task | mode | body crop | code | windows | wall s (median) | all rounds s "
        "| first progress s | peak RSS GB |",
        "|---|---|---|---|--:|--:|---|--:|--:|",
    ]
    for r in run["results"]:
        all_runs = ", ".join(f"{t:.1f}" for t in r["wall_s_all"])
        first = r.get("first_progress_s_median")
        lines.append(
            f"| {r['task']} | {r['mode']} | {r.get('body_crop', 'on')} | {r.get('code', 'this')} "
            f"| {r.get('windows', '')} | {r['wall_s_median']:.1f} | {all_runs} "
            f"| {'' if first is None else f'{first:.1f}'} | {r['peak_rss_gb']:.2f} |"
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m segresmamba.bench.e2e", description=__doc__)
    parser.add_argument(
        "--image",
        default=str(DEFAULT_IMAGE),
        help="the scan to segment, or 'full': example_ct resampled to 0.75 x 0.75 x 1.25 mm "
        "(made once, B-spline, int16)",
    )
    parser.add_argument("--tasks", default="btcv,spleen")
    parser.add_argument("--modes", default="normal,fast")
    parser.add_argument(
        "--rounds",
        "--repeats",
        type=int,
        default=3,
        help="alternating rounds: each setting once per round, in a fresh process (default 3)",
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs of each setting first")
    parser.add_argument(
        "--baseline",
        metavar="REF",
        help="also time the engine as it was at this git commit, alternating with this code",
    )
    parser.add_argument(
        "--body-crop",
        default="on",
        help="on, off or on,off: time CT tasks with the body crop, without it, or both in one run",
    )
    parser.add_argument("--out-json", type=Path, help="default docs/benchmarks/<date>-e2e-cpu.json")
    parser.add_argument("--no-write", action="store_true", help="leave docs/ alone")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.image == "full":
        print(f"e2e: the full-size CT at {FULL_SIZE_SPACING_MM} mm ...", file=sys.stderr)
        image = full_size_ct(DEFAULT_IMAGE)
    else:
        image = Path(args.image)
    if not image.exists():
        parser.error(f"image not found: {image}")
    crops = args.body_crop.split(",")
    if not crops or any(c not in ("on", "off") for c in crops):
        parser.error(f"--body-crop takes on, off or on,off; got {args.body_crop}")
    if args.rounds < 1 or args.warmup < 0:
        parser.error("--rounds must be at least 1 and --warmup at least 0")
    date = datetime.date.today().isoformat()
    argv_text = shlex.join(list(sys.argv[1:] if argv is None else argv))
    run = {
        "date": date,
        "command": f"python -m segresmamba.bench.e2e {argv_text}".strip(),
        "rounds": args.rounds,
        "warmup": args.warmup,
        "baseline": args.baseline,
        "image_grid": _grid_text(image),
        "device": {
            "cpu": _cpu_name(),
            "threads": os.cpu_count(),
            "platform": platform.platform(),
            "load_average": round(os.getloadavg()[0], 2),
        },
    }
    try:
        run["results"] = measure(
            image, args.tasks.split(","), args.modes.split(","), args.rounds, crops,
            baseline=args.baseline, warmup=args.warmup,
        )  # fmt: skip
    except ValueError as error:
        parser.error(str(error))
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

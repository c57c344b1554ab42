"""``python -m training.evaluate``: Dice and HD95 of a checkpoint, laid out as the paper's tables.

Example::

    python -m training.evaluate --task btcv --data btcv.json --model runs/btcv/best.safetensors \\
        --out runs/btcv/eval

Each case is segmented by the engine's own ``segresmamba.inference.segment`` (the path users
run: RAS, task spacing, sliding window, labels back on the input grid) and scored against its
label on the label's grid. Writes ``per_case.csv``, ``summary.csv``, ``summary.json`` and
``summary.md`` (paper layout: Table 1 BTCV, Table 2 BraTS, Table 3 spleen) into ``--out``.
Exit status 0, 1 on a data/model problem (one line), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import SimpleITK as sitk
from tqdm import tqdm

from segresmamba.errors import SegResMambaError
from segresmamba.inference import resolve_device, segment
from segresmamba.io import read_image
from segresmamba.tasks import Task, get_task
from segresmamba.weights import load_checkpoint, resolve_model

from .data import load_datalist
from .metrics import case_metrics, markdown_table, structure_masks, summarise
from .runlog import command_line, utc_now
from .validation import class_names

__all__ = ["evaluate_cases", "main"]


def _on_label_grid(prediction: sitk.Image, label: sitk.Image) -> sitk.Image:
    """The prediction on the label's grid: as is when they match (the normal case, checked by
    training.prepare), else nearest-neighbour in physical space."""
    if (
        prediction.GetSize() == label.GetSize()
        and all(abs(a - b) < 1e-4 for a, b in zip(prediction.GetSpacing(), label.GetSpacing()))
        and all(abs(a - b) < 1e-3 for a, b in zip(prediction.GetOrigin(), label.GetOrigin()))
        and all(abs(a - b) < 1e-4 for a, b in zip(prediction.GetDirection(), label.GetDirection()))
    ):
        return prediction
    return sitk.Resample(prediction, label, sitk.Transform(), sitk.sitkNearestNeighbor, 0)


def evaluate_cases(
    task: Task, cases: Sequence[dict], model, device: str = "auto", fast: bool = False
) -> list[dict]:
    """Segment and score each case; returns ``[{"case": ..., "metrics": {...}}]``."""
    results = []
    for entry in tqdm(cases, desc=f"evaluate {task.name}", unit="case", mininterval=5):
        images = entry["image"] if isinstance(entry["image"], list) else [entry["image"]]
        started = time.perf_counter()
        prediction = segment(images, task, model, device=device, fast=fast)
        seconds = time.perf_counter() - started
        label = read_image(entry["label"])
        prediction = _on_label_grid(prediction, label)
        spacing_zyx = tuple(reversed(label.GetSpacing()))
        metrics = case_metrics(
            structure_masks(prediction, task, truth=False),
            structure_masks(label, task, truth=True),
            spacing_zyx,
        )
        case = entry.get("case") or Path(images[0]).name
        results.append({"case": case, "metrics": metrics, "seconds": round(seconds, 2)})
    return results


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)


def write_reports(out: Path, task: Task, results: list[dict], model_name: str, info: dict) -> dict:
    """per_case.csv, summary.csv, summary.json and summary.md; returns the summary."""
    names = class_names(task)
    summary = summarise([r["metrics"] for r in results], names)
    out.mkdir(parents=True, exist_ok=True)
    header = ["case", "seconds"] + [f"{m}_{n}" for n in names for m in ("dice", "hd95")]
    rows = [
        [r["case"], r["seconds"]]
        + [repr(r["metrics"][n][m]) for n in names for m in ("dice", "hd95")]
        for r in results
    ]
    _write_csv(out / "per_case.csv", header, rows)
    _write_csv(
        out / "summary.csv",
        ["model", "metric", *names, "mean"],
        [
            [model_name, m, *(repr(summary[m][n]) for n in [*names, "mean"])]
            for m in ("dice", "hd95")
        ],
    )
    report = {
        **info,
        "model_name": model_name,
        "cases": len(results),
        "summary": summary,
        "per_case": results,
    }
    (out / "summary.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    table = {"btcv": "Table 1", "brats": "Table 2", "spleen": "Table 3"}.get(task.name, "")
    markdown = [
        f"# {task.title}: {model_name}",
        "",
        f"{len(results)} {info['split']} case(s) from `{info['data']}`, segmented with "
        f"`segresmamba.inference.segment` on {info['device']}; Dice and HD95 (MONAI) on each "
        f"label's own grid, averaged over cases{f', laid out as the paper’s {table}' if table else ''}.",
        "",
        markdown_table(task, summary, model_name),
        f"Command: `{info['command']}` ({info['date']}).",
        "",
    ]
    (out / "summary.md").write_text("\n".join(markdown), encoding="utf-8")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description="Per-structure Dice and HD95 of a checkpoint on a datalist split, through "
        "segresmamba's segment(), as Markdown and CSV in the paper's table layout.",
    )
    parser.add_argument("--task", required=True, help="btcv, brats, spleen or phantom")
    parser.add_argument("--data", required=True, help="datalist JSON (training.prepare)")
    parser.add_argument("--model", required=True, help="checkpoint file or registry model name")
    parser.add_argument("--split", default="validation", help="datalist key (default validation)")
    parser.add_argument("--out", required=True, help="folder for the reports")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--fast", action="store_true", help="segment at the task's fast spacing")
    parser.add_argument("--name", help="model name in the table (default: the checkpoint's)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N cases")
    args = parser.parse_args(argv)
    try:
        task = get_task(args.task)
        path = resolve_model(task, args.model, download=False)
        model, _header = load_checkpoint(path, task=task)
        device = resolve_device(args.device)
        cases = load_datalist(args.data, args.split)[: args.limit or None]
        results = evaluate_cases(task, cases, model, device=str(device), fast=args.fast)
        info = {
            "task": task.name,
            "data": str(args.data),
            "split": args.split,
            "checkpoint": str(path),
            "device": str(device),
            "fast": args.fast,
            "command": command_line("training.evaluate", argv),
            "date": utc_now(),
        }
        name = args.name or Path(path).stem
        summary = write_reports(Path(args.out), task, results, name, info)
    except SegResMambaError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print((Path(args.out) / "summary.md").read_text(encoding="utf-8"))
    print(f"mean Dice {summary['dice']['mean']:.4f} over {len(results)} case(s) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

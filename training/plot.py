"""``python -m training.plot``: Dice against training memory, as the paper's Figure 2.

Example::

    python -m training.plot --bench docs/benchmarks/efficiency/<file>.json \\
        --dice docs/paper_dice.json \\
        --out docs/dice_vs_memory.png

The Dice values are the paper's (Tables 1-3, from ``--dice``); we have not trained the peers.
The memory is ours, measured by ``training.efficiency`` or ``segresmamba bench --train`` (the
``--bench`` JSON): filled markers. The paper's own Table 7 memory is drawn as hollow markers
joined to ours, so the figure says plainly which numbers are whose.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "measured_memory"]

CHANNELS = {(1, 14): "btcv", (1, 2): "spleen", (4, 3): "brats"}
"""segresmamba bench results carry no dataset name: (in, out) channels say which it matches."""

PANELS = ("btcv", "spleen", "brats")
TITLES = {"btcv": "BTCV", "spleen": "Spleen", "brats": "BraTS 2021"}


def measured_memory(bench: dict) -> tuple[dict[str, dict[str, float]], str, dict]:
    """``({dataset: {model: GB}}, what the memory is, {dataset: input size})`` from our JSON.

    Reads ``training.efficiency`` output (``tables``) and ``segresmamba bench`` output
    (``results``, matched to a dataset by channels).
    """
    memory: dict[str, dict[str, float]] = {}
    sizes: dict[str, str] = {}
    if bench.get("format") == "segresmamba-efficiency":
        kind = "CUDA max_memory_allocated" if bench["memory_kind"] == "cuda" else "CPU peak RSS"
        for dataset, rows in bench["tables"].items():
            sizes[dataset] = "x".join(map(str, bench["datasets"][dataset]["size"]))
            for row in rows:
                if isinstance(row.get("train_peak_memory_gb"), (int, float)):
                    memory.setdefault(dataset, {})[row["model"]] = row["train_peak_memory_gb"]
        return memory, kind, sizes
    for row in bench.get("results", []):
        dataset = CHANNELS.get((row.get("in_channels"), row.get("out_channels")))
        if dataset and isinstance(row.get("train_peak_rss_gb"), (int, float)):
            memory.setdefault(dataset, {})[row["model"]] = row["train_peak_rss_gb"]
            sizes[dataset] = "x".join(map(str, row["input"]))
    return memory, "CPU peak RSS", sizes


def draw(bench: dict, paper: dict, out: Path, source: str = "") -> Path:
    """Draw the figure into ``out`` (PNG or any matplotlib format)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ours, kind, sizes = measured_memory(bench)
    paper_memory = paper.get("training_memory_gb", {}).get("values", {})
    figure, axes = plt.subplots(1, len(PANELS), figsize=(15, 4.8))
    every_model = sorted({m for table in paper["dice"].values() for m in table["values"]})
    colour_of = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(every_model)}
    for axis, dataset in zip(axes, PANELS):
        table = paper["dice"][dataset]
        for model in sorted(table["values"]):
            dice = table["values"][model]
            colour = colour_of[model]  # one colour per model in every panel
            reported = paper_memory.get(dataset, {}).get(model)
            measured = ours.get(dataset, {}).get(model)
            if reported is not None:
                axis.scatter(reported, dice, s=70, facecolors="none", edgecolors=[colour], lw=1.5)
            if measured is not None:
                axis.scatter(measured, dice, s=70, color=colour, zorder=3)
                if reported is not None:
                    axis.plot([reported, measured], [dice, dice], ":", color=colour, lw=1)
            x = measured if measured is not None else reported
            if x is not None:
                axis.annotate(
                    model,
                    (x, dice),
                    textcoords="offset points",
                    xytext=(6, 4),
                    fontsize=8,
                    color=colour,
                )
        size = f": ours at {sizes[dataset]}" if dataset in sizes else ": not measured by us"
        axis.set_title(f"{TITLES[dataset]}{size}", fontsize=10)
        axis.set_xlabel(
            f"training memory, GB (filled: ours, {kind}; hollow: paper Table 7)", fontsize=8
        )
        axis.set_ylabel(f"Dice: paper {table['table']}, {table['column']}", fontsize=8)
        axis.grid(alpha=0.3)
    figure.suptitle(
        "Dice vs training memory (after the paper's Figure 2): Dice from the paper; filled "
        "markers = memory measured here" + (f" ({source})" if source else ""),
        fontsize=10,
    )
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m training.plot", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--bench", required=True, help="our measurements (training.efficiency JSON)")
    p.add_argument("--dice", default="docs/paper_dice.json", help="the paper's Dice (JSON)")
    p.add_argument("--out", default="docs/dice_vs_memory.png")
    args = p.parse_args(argv)
    try:
        bench = json.loads(Path(args.bench).read_text(encoding="utf-8"))
        paper = json.loads(Path(args.dice).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        print(f"error: cannot read the inputs: {error}", file=sys.stderr)
        return 2
    out = draw(bench, paper, Path(args.out), source=Path(args.bench).name)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

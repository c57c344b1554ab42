"""``python -m training.efficiency``: the paper's Tables 6-7 (params, MACs, training memory,
inference time per patch) for SegResMamba and MONAI's UNet, UNETR, SwinUNETR and SegResNet.

The models, their MAC counter (which adds the selective scan that FLOP counters miss), the loss
and the timing loop are ``segresmamba.bench``'s, so these tables and ``segresmamba bench`` are
measured the same way. On the CPU every measurement runs in bench's own fresh worker process
and memory is the peak RSS; on a GPU the models run one after another in this process and
memory is ``torch.cuda.max_memory_allocated`` of one training step (forward, loss, backward,
AdamW), the quantity the paper's Table 7 reports. The settings follow Table 7's caption:
BTCV and BraTS at 128^3, spleen at 96^3, batch 1.

Writes ``docs/benchmarks/efficiency/<date>-<cpu|cuda>[-suffix].json`` (a folder of its own:
``segresmamba bench`` rebuilds ``docs/benchmarks.md`` from the ``*-cpu*.json`` files directly in
``docs/benchmarks/``, a different format) and prints Markdown.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from segresmamba.bench.measure import count_macs, make_loss, timed_runs
from segresmamba.bench.models import build_model, count_parameters
from segresmamba.bench.options import build_parser as bench_parser
from segresmamba.bench.options import resolve
from segresmamba.bench.report import device_info, repo_docs_dir, write_json
from segresmamba.bench.runner import run_models

from .runlog import command_line

__all__ = ["DATASETS", "MODELS", "main"]

MODELS = ("segresmamba", "unet", "unetr", "swinunetr", "segresnet")

DATASETS = {  # Table 7's caption: image size per dataset, batch size 1
    "btcv": {"in_channels": 1, "out_channels": 14, "size": (128, 128, 128)},
    "spleen": {"in_channels": 1, "out_channels": 2, "size": (96, 96, 96)},
    "brats": {"in_channels": 4, "out_channels": 3, "size": (128, 128, 128)},
}

PAPER = {
    "table6_params_millions": {
        "unetr": 93.01,
        "unet": 4.89,
        "swinunetr": 62.19,
        "segresmamba": 119.98,
    },
    "table6_flops_g": {"unetr": 177.44, "unet": 25.93, "swinunetr": 767.23, "segresmamba": 188.42},
    "table7_training_memory_gb": {
        "btcv": {"unetr": 3.08, "unet": 1.42, "swinunetr": 7.77, "segresmamba": 5.10},
        "spleen": {"unetr": 0.14, "unet": 0.48, "swinunetr": 3.21, "segresmamba": 2.22},
        "brats": {"unetr": 3.02, "unet": 1.13, "swinunetr": 7.68, "segresmamba": 4.78},
    },
}
"""The paper's own figures (Tables 6 and 7), stored beside ours for comparison only."""


def _cuda_measure(name: str, config: dict, size: Sequence[int], repeats: int, amp: bool) -> dict:
    """One model on the GPU: params, MACs, inference time per patch, peak training memory."""
    device = torch.device("cuda")
    in_ch, out_ch = config["in_channels"], config["out_channels"]
    torch.manual_seed(0)
    model = build_model(name, in_ch, out_ch, size)
    result = {"params": count_parameters(model)}
    example = torch.randn(1, in_ch, *size)
    result.update(count_macs(build_model(name, in_ch, out_ch, size).to("meta"), example.to("meta")))
    result.pop("tom_calls", None)
    model = model.to(device)
    x = example.to(device)
    labels = torch.randint(0, out_ch, (1, 1, *size), device=device)

    def forward() -> None:
        with torch.inference_mode(), torch.autocast("cuda", torch.float16, enabled=amp):
            model.eval()(x)
        torch.cuda.synchronize()

    times = timed_runs(forward, repeats, warmup=2)
    result["inference_s_per_patch"] = statistics.median(times)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-5)
    loss_fn, result["train_loss"] = make_loss(out_ch)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", torch.float16, enabled=amp):
            loss = loss_fn(model.train()(x), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        torch.cuda.synchronize()

    step()  # AdamW's moments exist from here on: the peak is that of steady training
    torch.cuda.reset_peak_memory_stats(device)
    result["train_step_s"] = statistics.median(timed_runs(step, repeats, warmup=0))
    result["train_peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    return result


def _cpu_measure(
    models: Sequence[str],
    config: dict,
    size: Sequence[int],
    repeats: int,
    threads: int,
    timeout: float,
) -> list[dict]:
    """bench's fresh-process workers: forward and training step of each model (peak RSS)."""
    argv = [
        "--models",
        ",".join(models),
        "--size",
        "x".join(map(str, size)),
        "--train",
        "--in-channels",
        str(config["in_channels"]),
        "--out-channels",
        str(config["out_channels"]),
        "--repeats",
        str(repeats),
        "--threads",
        str(threads),
        "--timeout",
        str(timeout),
    ]
    results = run_models(resolve(bench_parser().parse_args(argv)))
    for r in results:
        r["inference_s_per_patch"] = r.get("forward_s_median")
        r["train_peak_memory_gb"] = r.get("train_peak_rss_gb")
        r.pop("tom_calls", None)
    return results


def markdown(run: dict) -> str:
    """Table 6 (params, MACs) and Table 7 (training memory) with inference time, ours."""
    kind = "CUDA max_memory_allocated" if run["memory_kind"] == "cuda" else "peak RSS (CPU)"
    lines = []
    for dataset, rows in run["tables"].items():
        size = "x".join(map(str, run["datasets"][dataset]["size"]))
        lines += [
            f"### {dataset} ({size}, batch 1; memory = {kind})",
            "",
            "| Model | Params (M) | GMACs | Train memory (GB) | Inference s/patch | "
            "Paper memory (GB) |",
            "|---|---|---|---|---|---|",
        ]
        paper = PAPER["table7_training_memory_gb"].get(dataset, {})
        for r in rows:

            def num(key: str, fmt: str, scale: float = 1.0, r=r) -> str:
                value = r.get(key)
                return format(value / scale, fmt) if isinstance(value, (int, float)) else "–"

            lines.append(
                f"| {r['model']} | {num('params', '.2f', 1e6)} | {num('macs', '.1f', 1e9)} "
                f"| {num('train_peak_memory_gb', '.2f')} | "
                f"{num('inference_s_per_patch', '.3f')} | {paper.get(r['model'], '–')} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(
        prog="python -m training.efficiency", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--datasets", default="btcv,spleen,brats", help="comma-separated subset")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated subset")
    p.add_argument("--size", type=int, help="override every input size with N^3 (e.g. 64 on a CPU)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs (median)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads per worker")
    p.add_argument("--timeout", type=float, default=0, help="CPU: seconds per worker (0: none)")
    p.add_argument("--amp", action="store_true", help="CUDA: float16 autocast (default float32)")
    p.add_argument(
        "--suffix", default="", help="docs/benchmarks/efficiency/<date>-<dev>-<suffix>.json"
    )
    p.add_argument("--out-json", help="write here instead of docs/benchmarks/")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [d for d in datasets if d not in DATASETS]
    if unknown:
        p.error(f"unknown dataset(s) {', '.join(unknown)}; choose from {', '.join(DATASETS)}")
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if cuda and not torch.cuda.is_available():
        print("error: --device cuda but this PyTorch sees no CUDA GPU", file=sys.stderr)
        return 2
    date = datetime.date.today().isoformat()
    kind = "cuda" if cuda else "cpu"
    target = (
        Path(args.out_json)
        if args.out_json
        else (
            repo_docs_dir()
            / "benchmarks"
            / "efficiency"
            / f"{date}-{kind}{'-' + args.suffix if args.suffix else ''}.json"
        )
    )
    if target.exists() and not args.overwrite:
        print(f"error: {target} exists; use --suffix, --out-json or --overwrite", file=sys.stderr)
        return 2
    run = {
        "format": "segresmamba-efficiency",
        "format_version": 1,
        "date": date,
        "command": command_line("training.efficiency", argv),
        "memory_kind": kind,
        "device": device_info(args.threads),
        "amp": bool(cuda and args.amp),
        "datasets": {},
        "tables": {},
        "paper": PAPER,
    }
    if cuda:
        run["device"].update(kind="cuda", gpu=torch.cuda.get_device_name(0))
    for dataset in datasets:
        config = dict(DATASETS[dataset])
        size = (args.size,) * 3 if args.size else config["size"]
        config["size"] = list(size)
        run["datasets"][dataset] = config
        print(f"efficiency: {dataset} {'x'.join(map(str, size))} on {kind}", file=sys.stderr)
        if cuda:
            rows = []
            for name in models:
                try:
                    rows.append(
                        {"model": name, **_cuda_measure(name, config, size, args.repeats, args.amp)}
                    )
                except torch.cuda.OutOfMemoryError as error:
                    rows.append({"model": name, "errors": {"cuda": str(error).splitlines()[0]}})
                torch.cuda.empty_cache()  # the last model's blocks are free once it returned
        else:
            rows = _cpu_measure(models, config, size, args.repeats, args.threads, args.timeout)
        run["tables"][dataset] = rows
    write_json(target, run, overwrite=args.overwrite)
    print(markdown(run))
    print(f"wrote {target}")
    return 1 if any(r.get("errors") for rows in run["tables"].values() for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

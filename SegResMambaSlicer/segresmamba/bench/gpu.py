"""``segresmamba bench --device cuda``: the paper's GPU figures (Tables 1, 6, 7), measured.

For SegResMamba with each scan backend that runs on the device, and for each peer model: the
training peak memory (``torch.cuda.max_memory_allocated``) and time per step at the largest
size, and the inference time per patch at every size in fp32 and in bf16 autocast. Everything
runs in this one process, the allocator's peak reset before each model, because GPU memory, unlike
the RSS, can be read per model. ``--device cpu`` runs the same code (no memory figure) so the
GPU run can be rehearsed on a laptop with tiny sizes.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from .measure import count_macs, make_loss
from .models import build_model, count_parameters

GPU_DEFAULT_SIZES = [(96, 96, 96), (128, 128, 128)]
GPU_MODELS = ("segresmamba", "unet", "unetr", "swinunetr", "segresnet")
PRECISIONS = ("fp32", "bf16")


def available_backends(device: str) -> list[str]:
    """The scan backends that run on ``device`` here (the torch scan always does)."""
    from ..scan import numba_scan, triton_scan
    from ..scan.cuda_scan import load_kernel

    if device == "cuda":
        found = ["torch"]
        found += ["triton"] if triton_scan.AVAILABLE else []
        return found + (["cuda"] if load_kernel() is not None else [])
    return ["torch"] + (["numba"] if numba_scan.AVAILABLE else [])


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _median_time(step, device: str, repeats: int) -> float:
    step()  # warm-up: kernels compiled, allocator and AdamW state in place
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@contextlib.contextmanager
def _scan_backend(backend: str | None):
    """Force SEGRESMAMBA_SCAN for one measurement (the models read it on every call)."""
    old = os.environ.get("SEGRESMAMBA_SCAN")
    if backend:
        os.environ["SEGRESMAMBA_SCAN"] = backend
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("SEGRESMAMBA_SCAN", None)
        else:
            os.environ["SEGRESMAMBA_SCAN"] = old


def _train_figures(name, device, size, in_channels, out_channels, repeats):
    """Median training-step time and the allocator's peak (GB, CUDA only) over the steps."""
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model = build_model(name, in_channels, out_channels, size).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-5)
    loss_fn, _ = make_loss(out_channels)
    x = torch.randn((1, in_channels, *size), device=device)
    labels = torch.randint(0, out_channels, (1, 1, *size), device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), labels).backward()
        optimizer.step()

    step_s = _median_time(step, device, repeats)
    peak = torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else None
    return step_s, peak


def _infer_figures(name, device, size, in_channels, out_channels, repeats) -> dict:
    """Median inference time of one patch in fp32 and in bf16 autocast."""
    model = build_model(name, in_channels, out_channels, size).to(device).eval()
    x = torch.randn((1, in_channels, *size), device=device)
    timings = {}
    for precision in PRECISIONS:

        def forward(precision=precision) -> None:
            with (
                torch.inference_mode(),
                torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"),
            ):
                model(x)

        timings[precision] = _median_time(forward, device, repeats)
    return timings


def measure_model(
    name: str,
    backend: str | None,
    device: str,
    sizes: Sequence[tuple[int, int, int]],
    in_channels: int = 1,
    out_channels: int = 14,
    repeats: int = 3,
    seed: int = 0,
) -> dict:
    """One result row: train memory and step time at the largest size, inference per size."""
    train_size = max(sizes, key=lambda s: s[0] * s[1] * s[2])
    row: dict = {"model": name, "backend": backend, "input": list(train_size)}
    with _scan_backend(backend):
        torch.manual_seed(seed)
        meta = build_model(name, in_channels, out_channels, train_size)
        row["params"] = count_parameters(meta)
        example = torch.zeros((1, in_channels, *train_size))
        row["macs"] = count_macs(meta.to("meta"), example.to("meta"))["macs"]
        del meta
        row["train_step_s"], row["train_peak_mem_gb"] = _train_figures(
            name, device, train_size, in_channels, out_channels, repeats
        )
        row["infer_patch_s"] = {
            "x".join(map(str, size)): _infer_figures(
                name, device, size, in_channels, out_channels, repeats
            )
            for size in sizes
        }
    if device == "cuda":
        torch.cuda.empty_cache()
    return row


def device_description(device: str) -> str:
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        return f"{props.name}, {props.total_memory / 2**30:.0f} GiB, torch {torch.__version__}"
    return f"cpu ({os.cpu_count()} cores), torch {torch.__version__}"


def run_gpu_bench(
    device: str,
    models: Sequence[str],
    sizes: Sequence[tuple[int, int, int]],
    target: Path | None,
    command: str,
    repeats: int = 3,
    in_channels: int = 1,
    out_channels: int = 14,
    log=print,
) -> dict:
    """Measure every model (SegResMamba once per available backend) and write the JSON."""
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: PyTorch sees no CUDA device here")
    run = {
        "device": device_description(device),
        "date": datetime.date.today().isoformat(),
        "command": command,
        "results": [],
    }
    for name in models:
        backends = available_backends(device) if name.startswith("segresmamba") else [None]
        for backend in backends:
            log(f"bench: {name} {backend or ''} on {device} ...")
            try:
                row = measure_model(
                    name, backend, device, sizes, in_channels, out_channels, repeats
                )
            except Exception as error:  # noqa: BLE001 - one model's failure is reported, not fatal
                message = str(error).strip().splitlines()
                row = {"model": name, "backend": backend, "error": message[-1] if message else ""}
            log(f"bench:   {json.dumps(row)}")
            run["results"].append(row)
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".json.part")
        partial.write_text(json.dumps(run, indent=1) + "\n", encoding="utf-8")
        partial.replace(target)
        log(f"bench: wrote {target}")
    return run

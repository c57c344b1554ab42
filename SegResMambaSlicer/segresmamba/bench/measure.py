"""What a worker measures for one model: parameters, MACs, forward and training-step time, RSS.

Each of these runs in its own fresh process (see :mod:`.runner`), so ``ru_maxrss`` (the
process's peak resident set) is the peak of that one model's work plus the Python, torch and
MONAI baseline, which is reported separately as the RSS before the timed work.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from .models import build_model, count_parameters

GIB = float(1 << 30)
"""RSS figures are in GiB (2**30 bytes); the report calls them GB."""

SCAN_MACS_PER_ELEMENT = 3
"""Multiply-adds of the selective scan per token, channel and state element: the input term
(delta*u)*B, the recurrence a*h + b and the read-out h*C."""


def peak_rss_gb() -> float:
    """The process's peak resident set so far (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / GIB if sys.platform == "darwin" else peak * 1024 / GIB


def current_rss_gb() -> float:
    """The resident set now (from /proc/self/statm), or the peak where /proc is missing."""
    try:
        with open("/proc/self/statm", encoding="utf-8") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / GIB
    except (OSError, ValueError, IndexError):
        return peak_rss_gb()


def _high_water_gb() -> float:
    """VmHWM from /proc/self/status: the peak resident set since the last reset."""
    with open("/proc/self/status", encoding="utf-8") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / GIB
    raise OSError("no VmHWM in /proc/self/status")


def added_peak_rss_gb(step: Callable[[], object]) -> float | None:
    """How far the resident set rose, at its highest, above its level before ``step``.

    ``ru_maxrss`` only ever grows, so a step that peaks lower than something earlier in the
    process (numba's compiler, a bigger torch scan) would read as free. Linux resets the peak on
    request (``/proc/self/clear_refs``, value 5); elsewhere this returns None. Memory the
    allocator keeps from earlier calls would hide the step's own, so it goes back to the system
    first (glibc's ``malloc_trim``).
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w", encoding="utf-8") as clear:
            clear.write("5")
        before = current_rss_gb()
        step()
        return max(0.0, _high_water_gb() - before)
    except OSError:
        return None


def timed_runs(step: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``step`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


@contextlib.contextmanager
def _scan_stubbed(calls: list[int]) -> Iterator[None]:
    """Make ToM's selective scan a zero-cost stand-in while the FLOP counter runs.

    The counter only sees matmuls and convolutions; the torch scan's internal einsum would be
    counted partly and its sequential work not at all, so it is taken out here and counted
    analytically instead (exact for the recurrence, whatever the backend). Every
    ``selective_scan*`` function the ToM module imported is replaced (whatever the layout, each
    returns a tensor shaped like its first argument, u); :func:`count_macs` checks that the
    stand-in was reached once per direction.
    """
    from ..network import tom

    originals = {
        name: value
        for name, value in vars(tom).items()
        if name.startswith("selective_scan") and callable(value)
    }

    def stub(u: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        calls[0] += 1
        if kwargs.get("delta_proj") is not None:  # dt_proj's product, which the scan now does:
            torch.nn.functional.linear(args[0], kwargs["delta_proj"])  # counted as a matmul
        return torch.zeros_like(u)

    for name in originals:
        setattr(tom, name, stub)
    try:
        yield
    finally:
        for name, value in originals.items():
            setattr(tom, name, value)


def count_macs(model: nn.Module, example: torch.Tensor) -> dict:
    """MACs of one forward pass: FlopCounterMode's FLOPs / 2 plus the selective scan's own count.

    Forward hooks on every ``TriOrientedMamba`` record the token count L of each call; each of
    its directions then costs ``3 * L * d_inner * d_state`` multiply-adds and
    ``L * d_inner * d_state`` exponentials (times the batch).
    """
    from torch.utils.flop_counter import FlopCounterMode

    from ..network import TriOrientedMamba
    from ..network.tom import DIRECTIONS

    toms: list[dict] = []
    names = {module: name for name, module in model.named_modules()}

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        x = inputs[0]
        length = int(x.shape[2:].numel())
        elements = int(x.shape[0]) * length * module.d_inner * module.d_state * len(DIRECTIONS)
        toms.append(
            {
                "module": names.get(module, "?"),
                "tokens": length,
                "d_inner": module.d_inner,
                "d_state": module.d_state,
                "directions": len(DIRECTIONS),
                "scan_macs": SCAN_MACS_PER_ELEMENT * elements,
                "scan_exps": elements,
            }
        )

    handles = [
        m.register_forward_hook(hook) for m in model.modules() if isinstance(m, TriOrientedMamba)
    ]
    stub_calls = [0]
    counter = FlopCounterMode(display=False)
    stubbed = _scan_stubbed(stub_calls) if handles else contextlib.nullcontext()
    try:
        with torch.no_grad(), stubbed, counter:
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    expected_calls = sum(t["directions"] for t in toms)
    if stub_calls[0] != expected_calls:
        raise RuntimeError(
            f"the MAC count expected {expected_calls} selective-scan calls from the ToM hooks but "
            f"saw {stub_calls[0]}: ToM no longer calls a selective_scan* function of "
            "segresmamba.network.tom; update segresmamba.bench.measure"
        )
    counted = int(counter.get_total_flops()) // 2
    scan_macs = sum(t["scan_macs"] for t in toms)
    return {
        "macs": counted + scan_macs,
        "counted_macs": counted,
        "scan_macs": scan_macs,
        "scan_exps": sum(t["scan_exps"] for t in toms),
        "tom_calls": toms,
    }


def _inputs(in_channels: int, size: Sequence[int], batch: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((batch, in_channels, *size), generator=generator)


def measure_forward(
    name: str,
    in_channels: int,
    out_channels: int,
    size: Sequence[int],
    repeats: int,
    batch: int = 1,
    seed: int = 0,
    count: bool = True,
) -> dict:
    """Parameters, inference-mode forward time and peak RSS, then MACs (after the RSS is read)."""
    torch.manual_seed(seed)
    model = build_model(name, in_channels, out_channels, size).eval()
    x = _inputs(in_channels, size, batch, seed)
    rss_before = current_rss_gb()
    peak_before = peak_rss_gb()

    def forward() -> None:
        with torch.inference_mode():
            model(x)

    times = timed_runs(forward, repeats)
    result = {
        "params": count_parameters(model),
        "forward_s_median": statistics.median(times),
        "forward_s_all": times,
        "rss_before_gb": rss_before,
        "peak_rss_before_gb": peak_before,
        "peak_rss_gb": peak_rss_gb(),
    }
    result["forward_added_rss_gb"] = result["peak_rss_gb"] - rss_before
    if count:
        # After the RSS was read: the counter needs one more forward, on the meta device where
        # it can (shapes only, no arithmetic, no memory), else on the CPU.
        try:
            result.update(count_macs(model.to("meta"), x.to("meta")), macs_counted_on="meta")
        except Exception:  # noqa: BLE001 - some op without a meta kernel: count for real
            model = build_model(name, in_channels, out_channels, size).eval()
            result.update(count_macs(model, x), macs_counted_on="cpu")
    return result


def make_loss(out_channels: int) -> tuple[nn.Module, str]:
    """DiceCE on softmax with one-hot labels, as the BTCV tutorials train (Dice alone if absent)."""
    try:
        from monai.losses import DiceCELoss

        return DiceCELoss(to_onehot_y=True, softmax=True), "DiceCELoss(softmax, to_onehot_y)"
    except ImportError:  # pragma: no cover - MONAI is a dependency; kept for odd installs
        from monai.losses import DiceLoss

        return DiceLoss(to_onehot_y=True, softmax=True), "DiceLoss(softmax, to_onehot_y)"


def measure_train(
    name: str,
    in_channels: int,
    out_channels: int,
    size: Sequence[int],
    repeats: int,
    batch: int = 1,
    seed: int = 0,
) -> dict:
    """One training step (forward, loss, backward, AdamW) timed after one warm-up step.

    The warm-up step allocates AdamW's moment buffers, so the peak RSS is that of steady
    training, not of the first step only.
    """
    torch.manual_seed(seed)
    model = build_model(name, in_channels, out_channels, size).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-5)
    loss_fn, loss_name = make_loss(out_channels)
    x = _inputs(in_channels, size, batch, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    labels = torch.randint(0, out_channels, (batch, 1, *size), generator=generator)
    rss_before = current_rss_gb()
    peak_before = peak_rss_gb()
    losses: list[float] = []

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), labels)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))

    times = timed_runs(step, repeats)
    peak = peak_rss_gb()
    return {
        "train_step_s_median": statistics.median(times),
        "train_step_s_all": times,
        "train_rss_before_gb": rss_before,
        "train_peak_rss_before_gb": peak_before,
        "train_peak_rss_gb": peak,
        "train_added_rss_gb": peak - rss_before,
        "train_loss": loss_name,
        "train_optimizer": "AdamW(lr=1e-4, weight_decay=1e-5)",
        "train_losses": losses,
    }

"""Scan micro-benchmark: the chunked torch scan, the fused numba scan and a per-token loop.

The default shape is stage 0's second ToM at 96³ (L = 48³ = 110,592 tokens, d_inner = 96,
d_state = 16, batch 1): the one call that holds most of SegResMamba's scan work. The loop is the
fair baseline a careful PyTorch user would write (in-place updates, one exp per token, no
Python lists), timed on a prefix and scaled linearly to L: its cost per token does not depend on
the position, so the scaling is exact up to timing noise, and the output says it was scaled.
"""

from __future__ import annotations

import math
import statistics
import time

import torch
import torch.nn.functional as F

from .measure import added_peak_rss_gb, current_rss_gb, peak_rss_gb, timed_runs

DEFAULT_LENGTH = 110_592
DEFAULT_D = 96
DEFAULT_N = 16
DEFAULT_LOOP_TOKENS = 8192
MIN_REPEATS = 5
"""The scan is cheap next to a model, so its figures are always medians of at least 5 runs."""


def make_scan_inputs(
    length: int, d: int, n: int, batch: int = 1, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Inputs shaped and scaled as a freshly initialised ToM direction produces them.

    A = -(1..n) per channel (A_log = log(1..n)), softplus(delta + bias) log-uniform in
    [1e-3, 0.1] around mamba-ssm's initial step sizes, unit-scale u, B, C, z.
    """
    g = torch.Generator().manual_seed(seed)
    dt = torch.exp(torch.rand(d, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    return {
        "u": torch.randn(batch, d, length, generator=g),
        "delta": 0.5 * torch.randn(batch, d, length, generator=g),
        "A": -torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1),
        "B": torch.randn(batch, n, length, generator=g),
        "C": torch.randn(batch, n, length, generator=g),
        "D": torch.ones(d),
        "z": torch.randn(batch, d, length, generator=g),
        "delta_bias": dt + torch.log(-torch.expm1(-dt)),
    }


def scan_entry() -> tuple[str, bool]:
    """The public scan function ToM calls: token-major ``selective_scan_tokens`` when the
    package has it (the layout the model feeds it), else channels-first ``selective_scan``."""
    from .. import scan

    if hasattr(scan, "selective_scan_tokens"):
        return "segresmamba.scan.selective_scan_tokens(backend='torch'), token-major", True
    return "segresmamba.scan.selective_scan(backend='torch'), channels-first", False


def to_entry_layout(inputs: dict[str, torch.Tensor], token_major: bool) -> dict[str, torch.Tensor]:
    """Contiguous copies in the layout the scan entry takes (prepared outside the timing)."""
    if not token_major:
        return dict(inputs)
    return {k: (v.transpose(1, 2).contiguous() if v.dim() == 3 else v) for k, v in inputs.items()}


def torch_scan(
    inputs: dict[str, torch.Tensor], token_major: bool, backend: str = "torch"
) -> torch.Tensor:
    """The project's scan with Mamba's options (bias, softplus, D, SiLU gate) on ``backend``.

    ``inputs`` are in the entry's layout (see :func:`to_entry_layout`); returns that layout.
    """
    from .. import scan

    entry = scan.selective_scan_tokens if token_major else scan.selective_scan
    return entry(**inputs, delta_softplus=True, backend=backend)


def numba_available() -> bool:
    """Whether the fused numba backend can run here (numba installed)."""
    from ..scan import numba_scan

    return numba_scan.AVAILABLE


def time_forward_backward(
    inputs: dict[str, torch.Tensor],
    token_major: bool,
    backend: str,
    grad_out: torch.Tensor,
    repeats: int,
) -> dict[str, float]:
    """Median seconds of the forward (keeping what backward needs), the backward and both,
    over ``repeats`` runs after one warm-up (which also compiles or loads numba's kernels)."""
    grad_inputs = {k: v.clone().requires_grad_(v.is_floating_point()) for k, v in inputs.items()}
    forward_times: list[float] = []
    backward_times: list[float] = []
    for index in range(repeats + 1):
        for tensor in grad_inputs.values():
            tensor.grad = None
        start = time.perf_counter()
        out = torch_scan(grad_inputs, token_major, backend)
        middle = time.perf_counter()
        out.backward(grad_out)
        end = time.perf_counter()
        del out
        if index:
            forward_times.append(middle - start)
            backward_times.append(end - middle)
    return {
        "forward_with_grad_s_median": statistics.median(forward_times),
        "backward_s_median": statistics.median(backward_times),
        "backward_s_all": backward_times,
        "forward_backward_s_median": statistics.median(
            [f + b for f, b in zip(forward_times, backward_times)]
        ),
    }


def run_numba_scan(
    inputs: dict[str, torch.Tensor], token_major: bool, grad_out: torch.Tensor, repeats: int
) -> dict:
    """The fused numba scan on the same inputs: forward (inference), forward + backward, and
    its largest difference from the torch scan's output."""
    if not numba_available():
        return {"numba_error": "numba is not installed"}

    def forward() -> torch.Tensor:
        with torch.inference_mode():
            return torch_scan(inputs, token_major, "numba")

    forward_times = timed_runs(forward, repeats)
    with torch.inference_mode():
        difference = float((forward() - torch_scan(inputs, token_major)).abs().max())
    trained = time_forward_backward(inputs, token_major, "numba", grad_out, repeats)
    grad_inputs = {k: v.clone().requires_grad_(v.is_floating_point()) for k, v in inputs.items()}

    def forward_backward() -> None:
        torch_scan(grad_inputs, token_major, "numba").backward(grad_out)

    return {
        "numba_forward_s_median": statistics.median(forward_times),
        "numba_forward_s_all": forward_times,
        **{f"numba_{k}": v for k, v in trained.items()},
        "numba_vs_torch_max_abs_diff": difference,
        # after the timings (kernels compiled): the peak above the level before each call
        "numba_forward_added_rss_gb": added_peak_rss_gb(forward),
        "numba_forward_backward_added_rss_gb": added_peak_rss_gb(forward_backward),
    }


def loop_scan(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The same scan one token at a time, written plainly but without waste.

    Per token: ``h = exp(delta_t A) * h + (delta_t u_t) B_t`` and ``y_t = sum_n h C_t``, with
    preallocated buffers and in-place ops (one exp per token). Everything that is not sequential
    (softplus, delta*u, D*u, the gate) is done once for the whole sequence, as it should be.
    """
    u, A, B, C = inputs["u"], inputs["A"], inputs["B"], inputs["C"]
    batch, d, length = u.shape
    n = A.shape[-1]
    delta = F.softplus(inputs["delta"] + inputs["delta_bias"][None, :, None])
    delta_t_major = delta.permute(2, 0, 1).contiguous()  # (L, batch, d)
    du = (delta * u).permute(2, 0, 1).contiguous()
    B_t_major = B.permute(2, 0, 1).contiguous()  # (L, batch, n)
    C_t_major = C.permute(2, 0, 1).contiguous()
    h = u.new_zeros(batch, d, n)
    decay = torch.empty_like(h)
    term = torch.empty_like(h)
    y = u.new_empty(length, batch, d)
    for t in range(length):
        torch.mul(delta_t_major[t][:, :, None], A, out=decay)
        h.mul_(decay.exp_())
        torch.mul(du[t][:, :, None], B_t_major[t][:, None, :], out=term)
        h.add_(term)
        torch.mul(h, C_t_major[t][:, None, :], out=term)
        torch.sum(term, dim=-1, out=y[t])
    y = y.permute(1, 2, 0) + inputs["D"][None, :, None] * u
    return y * F.silu(inputs["z"])


def _prefix(inputs: dict[str, torch.Tensor], tokens: int) -> dict[str, torch.Tensor]:
    return {k: (v[..., :tokens].contiguous() if v.dim() == 3 else v) for k, v in inputs.items()}


def run_scan_benchmark(
    length: int = DEFAULT_LENGTH,
    d: int = DEFAULT_D,
    n: int = DEFAULT_N,
    batch: int = 1,
    loop_tokens: int = DEFAULT_LOOP_TOKENS,
    repeats: int = 3,
    seed: int = 0,
) -> dict:
    """Torch-scan forward and backward time and added RSS, the loop's scaled time, the ratio,
    and the fused numba scan's forward and forward + backward times on the same inputs.

    Meant for a fresh process: the forward-only peak is read before anything keeps gradients,
    and the loop (small buffers) runs between the two so neither inflates the other.
    """
    repeats = max(repeats, MIN_REPEATS)
    entry, token_major = scan_entry()
    channels_first = make_scan_inputs(length, d, n, batch, seed)
    inputs = to_entry_layout(channels_first, token_major)
    rss_before = current_rss_gb()
    peak_before = peak_rss_gb()

    def forward() -> None:
        with torch.inference_mode():
            torch_scan(inputs, token_major)

    forward_times = timed_runs(forward, repeats)
    forward_peak = peak_rss_gb()

    loop_tokens = min(loop_tokens, length)
    prefix = _prefix(channels_first, loop_tokens)
    with torch.inference_mode():
        fast = torch_scan(to_entry_layout(prefix, token_major), token_major)
        fast = fast.transpose(1, 2) if token_major else fast
        difference = float((loop_scan(prefix) - fast).abs().max())
        loop_times = timed_runs(lambda: loop_scan(prefix), repeats, warmup=0)
    loop_prefix_s = statistics.median(loop_times)
    loop_scaled_s = loop_prefix_s * length / loop_tokens

    grad_out = torch.randn(
        tuple(inputs["u"].shape), generator=torch.Generator().manual_seed(seed + 1)
    )
    trained = time_forward_backward(inputs, token_major, "torch", grad_out, repeats)
    train_peak = peak_rss_gb()
    # After the torch figures, so its peaks above are the torch scan's alone.
    fused = run_numba_scan(inputs, token_major, grad_out, repeats)
    forward_s = statistics.median(forward_times)
    return {
        "shape": {"batch": batch, "length": length, "d_inner": d, "d_state": n},
        "what": "stage 0's second ToM direction at 96³" if length == DEFAULT_LENGTH else "custom",
        "scan_function": entry,
        "torch_forward_s_median": forward_s,
        "torch_forward_s_all": forward_times,
        "torch_forward_with_grad_s_median": trained["forward_with_grad_s_median"],
        "torch_backward_s_median": trained["backward_s_median"],
        "torch_backward_s_all": trained["backward_s_all"],
        "torch_forward_backward_s_median": trained["forward_backward_s_median"],
        **fused,
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "loop_tokens_timed": loop_tokens,
        "loop_prefix_s_median": loop_prefix_s,
        "loop_s_scaled": loop_scaled_s,
        "loop_note": (
            f"per-token loop timed on the first {loop_tokens} tokens and scaled linearly "
            f"x{length / loop_tokens:.2f} to {length} tokens"
        ),
        "speedup_vs_loop": loop_scaled_s / forward_s,
        "loop_vs_torch_max_abs_diff": difference,
        "rss_before_gb": rss_before,
        "peak_rss_before_gb": peak_before,
        "forward_peak_rss_gb": forward_peak,
        "forward_added_rss_gb": forward_peak - rss_before,
        "backward_peak_rss_gb": train_peak,
        "backward_added_rss_gb": train_peak - rss_before,
        "scan_macs": 3 * batch * length * d * n,
        "scan_exps": batch * length * d * n,
    }

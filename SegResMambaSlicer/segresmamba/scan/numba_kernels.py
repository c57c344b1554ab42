"""numba kernels of the fused selective scan: the forward with state checkpoints, and helpers.

Layout is token-major, as ToM produces it: u, step, z, y (batch, L, d); B, C (batch, L, n);
``A_t`` (batch, n, d), A transposed so that a block of neighbouring channels is contiguous. Each
parallel work item owns one batch element and a block of ``width`` neighbouring channels: the
innermost loops run over those channels (SIMD vectors), the state of the block lives in a small
local array, and every u/step/B/C cache line is read once per block, not once per channel.

The block width is an argument, chosen by the caller (``numba_scan.block_width``): as wide as
keeps every thread busy. Wide blocks are what make these loops fast: a loop of 16 channels per
token runs at a fraction of the speed of one of 48 (its set-up, and the run-time checks LLVM
inserts before vectorising, are paid per token and state row).

Why the decays are computed here: a (tokens x channels x state) tensor of ``exp(step * A)``
costs more memory traffic than the scan itself. The step itself, softplus(delta + bias), is
computed here too (:mod:`.numba_math` has exp, softplus and sigmoid as plain vectorisable
arithmetic), so the raw projection goes in as it is and no (tokens x channels) step tensor is
made before or kept for the backward. Each decay is taken as 2**(step * A log2(e)), A scaled
once per block: exp2's range reduction is a plain rounding, a few instructions fewer per state
element than exp's.

This scalar forward runs in float64 (gradcheck's dtype); float32 runs :mod:`.numba_simd`'s
vector code, and the backward is :mod:`.numba_backward`. Both share the helpers here.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from .numba_math import KERNEL_OPTIONS, LOG2_E, fast_exp2, sigmoid, softplus
from .numba_prefetch import PREFETCH_STEPS, prefetch_row


@numba.njit(inline="always")
def _load_block(source, b, t, c0, w, into, width):  # pragma: no cover - compiled
    """``into[:w] = source[b, t, c0:c0 + w]``, the rest of the block zero (padding channels)."""
    for j in range(w):
        into[j] = source[b, t, c0 + j]
    for j in range(w, width):
        into[j] = 0


@numba.njit(inline="always")
def _load_step(
    delta, bias, proj_t, has_bias, has_proj, use_softplus, b, t, c0, w, raw, st, width
):  # pragma: no cover
    """``raw[:w]`` = delta + bias and ``st[:w]`` = softplus(raw) (or raw) of token t; the
    padding channels get step 0, so they neither decay nor take input. With ``has_proj``,
    delta is the low-rank (batch, L, r) input and ``proj_t`` (r, d) projects it to channels."""
    if has_proj:
        for j in range(width):
            raw[j] = 0
        for q in range(proj_t.shape[0]):
            low = delta[b, t, q]
            for j in range(w):
                raw[j] += low * proj_t[q, c0 + j]
    else:
        _load_block(delta, b, t, c0, w, raw, width)
    if has_bias:
        for j in range(w):
            raw[j] += bias[c0 + j]
    if use_softplus:
        for j in range(w):
            st[j] = softplus(raw[j])
        for j in range(w, width):
            st[j] = 0
    else:
        for j in range(width):
            st[j] = raw[j]


@numba.njit(inline="always")
def _prefetch_inputs(delta, u, B, C, z, has_proj, has_z, b, t, c0, w):  # pragma: no cover
    """Ask for token t's rows of the inputs (see :mod:`.numba_prefetch`)."""
    prefetch_row(delta, (b, t), 0 if has_proj else c0, delta.shape[2] if has_proj else w)
    prefetch_row(u, (b, t), c0, w)
    prefetch_row(B, (b, t), 0, B.shape[2])
    prefetch_row(C, (b, t), 0, C.shape[2])
    if has_z:
        prefetch_row(z, (b, t), c0, w)


@numba.njit(**KERNEL_OPTIONS)
def scan_forward(
    delta,
    bias,
    proj_t,
    u,
    A_t,
    B,
    C,
    D,
    z,
    order,
    y,
    checkpoints,
    has_bias,
    has_proj,
    use_softplus,
    has_D,
    has_z,
    save,
    accumulate,
    chunk,
    width,
):  # pragma: no cover - compiled
    """y = (<h_t, C_t> + D u_t) * silu(z_t) (``accumulate``: y += that), with the state
    h_t = exp(step_t A) h_{t-1} + step_t u_t B_t and
    step = softplus(delta + bias) (``use_softplus``) or delta + bias, where delta is the
    low-rank input times ``proj_t`` when ``has_proj`` (mamba-ssm's dt_proj, so its
    tokens x channels output is never stored).

    The sequence visits the rows of every (batch, L, .) tensor in ``order`` (step i reads and
    writes row ``order[i]``), so a reversed or reordered direction needs no reordered copies.
    ``checkpoints`` (batch, L/chunk rounded up, n, d) receives the state before every chunk's
    first step when ``save``. bias, D and z are read only when ``has_bias`` / ``has_D`` /
    ``has_z``. The decay of each state element is computed where it is used, in the one loop
    that updates the state and sums its read-out.
    """
    batch, length, d = u.shape
    n = A_t.shape[1]
    blocks = (d + width - 1) // width
    size = n * width
    for item in prange(batch * blocks):
        b = item // blocks
        c0 = (item % blocks) * width
        w = min(width, d - c0)
        dtype = u.dtype
        h = np.zeros(size, dtype)
        rate = np.zeros(size, dtype)
        for k in range(n):
            for j in range(w):
                rate[k * width + j] = A_t[b, k, c0 + j] * LOG2_E  # decay = 2**(step rate)
        raw = np.empty(width, dtype)
        st = np.empty(width, dtype)
        uu = np.empty(width, dtype)
        drive = np.empty(width, dtype)
        acc = np.empty(width, dtype)
        for i in range(length):
            t = order[i]
            if i + PREFETCH_STEPS < length:
                ahead = order[i + PREFETCH_STEPS]
                _prefetch_inputs(delta, u, B, C, z, has_proj, has_z, b, ahead, c0, w)
                prefetch_row(y, (b, ahead), c0, w)
            if save and i % chunk == 0:
                for k in range(n):
                    for j in range(w):
                        checkpoints[b, i // chunk, k, c0 + j] = h[k * width + j]
            _load_step(
                delta, bias, proj_t, has_bias, has_proj, use_softplus, b, t, c0, w, raw, st, width
            )
            _load_block(u, b, t, c0, w, uu, width)
            for j in range(width):
                drive[j] = st[j] * uu[j]
                acc[j] = 0
            for k in range(n):
                bk = B[b, t, k]
                ck = C[b, t, k]
                for j in range(width):
                    kj = k * width + j
                    value = fast_exp2(st[j] * rate[kj]) * h[kj] + drive[j] * bk
                    h[kj] = value
                    acc[j] += value * ck
            if has_D:
                for j in range(w):
                    acc[j] += D[c0 + j] * uu[j]
            if has_z:
                for j in range(w):
                    gate = z[b, t, c0 + j]
                    acc[j] *= gate * sigmoid(gate)
            if accumulate:
                for j in range(w):
                    y[b, t, c0 + j] += acc[j]
            else:
                for j in range(w):
                    y[b, t, c0 + j] = acc[j]

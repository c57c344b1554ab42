"""numba kernels of the fused selective scan: forward with state checkpoints, and the adjoint.

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
costs more memory traffic than the scan itself. numba on most machines has no vectorised exp
(no SVML), and a scalar libm call per element would dominate, so float32 uses Cephes' expf
(range reduction by ln 2, a degree-6 polynomial, the power of two built from its bits), written
as plain arithmetic that LLVM vectorises; it is within about 2 ulp of the exact value. float64
(used by gradcheck) calls ``math.exp``.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange, types
from numba.extending import overload

_F = np.float32
_LOG2E = _F(1.44269504088896341)
_LN2_HI = _F(0.693359375)
_LN2_LO = _F(-2.12194440e-4)
_P0, _P1, _P2 = _F(1.9875691500e-4), _F(1.3981999507e-3), _F(8.3334519073e-3)
_P3, _P4, _P5 = _F(4.1665795894e-2), _F(1.6666665459e-1), _F(5.0000001201e-1)
_ONE, _BIAS, _MANTISSA = _F(1.0), _F(127.0), _F(8388608.0)
_LOW, _HIGH = _F(-87.3), _F(88.3)
_ROUND = _F(12582912.0)
"""1.5 * 2**23: adding and subtracting it rounds a float32 to an integer. It needs exact
IEEE arithmetic, which is why no kernel here allows fastmath reassociation."""


def exp_into(x, out, bits, bits_as_float, count):  # pragma: no cover - replaced when compiled
    """``out[:count] = exp(x[:count])``; ``bits`` (int32) and its float32 view are scratch."""
    for j in range(count):
        out[j] = math.exp(x[j])


@overload(exp_into, inline="always", jit_options={"cache": True})
def _exp_into_overload(x, out, bits, bits_as_float, count):
    if x.dtype == types.float32:

        def exp32(x, out, bits, bits_as_float, count):  # pragma: no cover - compiled
            for j in range(count):
                v = np.minimum(np.maximum(x[j], _LOW), _HIGH)
                k = (v * _LOG2E + _ROUND) - _ROUND  # round to nearest, branch-free
                r = v - k * _LN2_HI - k * _LN2_LO
                p = ((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5
                out[j] = p * (r * r) + r + _ONE
                bits[j] = np.int32((k + _BIAS) * _MANTISSA)
            for j in range(count):
                out[j] = out[j] * bits_as_float[j]

        return exp32

    def exp64(x, out, bits, bits_as_float, count):  # pragma: no cover - compiled
        for j in range(count):
            out[j] = math.exp(x[j])

    return exp64


@numba.njit(inline="always")
def _load_block(source, b, t, c0, w, into, width):  # pragma: no cover - compiled
    """``into[:w] = source[b, t, c0:c0 + w]``, the rest of the block zero (padding channels)."""
    for j in range(w):
        into[j] = source[b, t, c0 + j]
    for j in range(w, width):
        into[j] = 0


@numba.njit(parallel=True, cache=True, nogil=True, error_model="numpy")
def scan_forward(step, u, A_t, B, C, D, z, y, checkpoints, has_D, has_z, save, chunk, width):
    """y = (<h_t, C_t> + D u_t) * silu(z_t), h_t = exp(step_t A) h_{t-1} + step_t u_t B_t.

    ``checkpoints`` (batch, L/chunk rounded up, n, d) receives the state before every chunk's
    first token when ``save``. D and z are read only when ``has_D`` / ``has_z``. A block's
    padding channels (beyond d) get step 0 and input 0 and are never written out.
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
                rate[k * width + j] = A_t[b, k, c0 + j]
        x = np.empty(size, dtype)
        decay = np.empty(size, dtype)
        bits = np.empty(size, np.int32)
        bits_f = bits.view(np.float32)
        st = np.empty(width, dtype)
        uu = np.empty(width, dtype)
        drive = np.empty(width, dtype)
        acc = np.empty(width, dtype)
        for t in range(length):
            if save and t % chunk == 0:
                for k in range(n):
                    for j in range(w):
                        checkpoints[b, t // chunk, k, c0 + j] = h[k * width + j]
            _load_block(step, b, t, c0, w, st, width)
            _load_block(u, b, t, c0, w, uu, width)
            for j in range(width):
                drive[j] = st[j] * uu[j]
                acc[j] = 0
            for k in range(n):
                for j in range(width):
                    x[k * width + j] = st[j] * rate[k * width + j]
            exp_into(x, decay, bits, bits_f, size)
            for k in range(n):
                bk = B[b, t, k]
                ck = C[b, t, k]
                for j in range(width):
                    value = decay[k * width + j] * h[k * width + j] + drive[j] * bk
                    h[k * width + j] = value
                    acc[j] += value * ck
            if has_D:
                for j in range(w):
                    acc[j] += D[c0 + j] * uu[j]
            if has_z:
                _load_block(z, b, t, c0, w, st, width)
                for j in range(width):
                    x[j] = -st[j]
                exp_into(x, decay, bits, bits_f, width)
                for j in range(width):
                    acc[j] *= st[j] / (decay[j] + 1)
            for j in range(w):
                y[b, t, c0 + j] = acc[j]


@numba.njit(parallel=True, cache=True, nogil=True, error_model="numpy")
def scan_backward(
    step,
    u,
    A_t,
    B,
    C,
    D,
    z,
    grad_y,
    checkpoints,
    has_D,
    has_z,
    chunk,
    groups,
    width,
    grad_u,
    grad_step,
    grad_z,
    grad_A_t,
    grad_D,
    grad_B_parts,
    grad_C_parts,
):
    """Gradients of :func:`scan_forward` by the adjoint recurrence, backwards in time.

    Per chunk (last first), the states are recomputed from the chunk's checkpoint into a small
    buffer together with their decays; then ``g_t = grad_y_t C_t + exp(step_{t+1} A) g_{t+1}``
    runs backwards over it. Work item = (batch element, group of channel blocks): B and C are
    shared by all channels, so each group sums its channels into its own slice of
    ``grad_B_parts`` / ``grad_C_parts`` (groups, batch, L, n), zeroed by the caller and summed
    after: no two threads ever write the same element. grad_A_t (batch, n, d) and grad_D
    (batch, d) are written per channel block.
    """
    batch, length, d = u.shape
    n = A_t.shape[1]
    blocks = (d + width - 1) // width
    chunks = (length + chunk - 1) // chunk
    size = n * width
    for item in prange(batch * groups):
        b = item // groups
        group = item % groups
        dtype = u.dtype
        states = np.empty((chunk, size), dtype)
        decays = np.empty((chunk, size), dtype)
        first = np.empty(size, dtype)
        adjoint = np.empty(size, dtype)
        rate = np.empty(size, dtype)
        gA = np.empty(size, dtype)
        gD = np.zeros(width, dtype)
        x = np.empty(size, dtype)
        bits = np.empty(size, np.int32)
        bits_f = bits.view(np.float32)
        st = np.empty(width, dtype)
        uu = np.empty(width, dtype)
        zz = np.empty(width, dtype)
        gate = np.empty(width, dtype)
        drive = np.empty(width, dtype)
        gy = np.empty(width, dtype)
        g_drive = np.empty(width, dtype)
        g_step = np.empty(width, dtype)
        part_b = np.empty(width, dtype)
        part_c = np.empty(width, dtype)
        for block in range(group, blocks, groups):
            c0 = block * width
            w = min(width, d - c0)
            rate[:] = 0
            for k in range(n):
                for j in range(w):
                    rate[k * width + j] = A_t[b, k, c0 + j]
            adjoint[:] = 0
            gA[:] = 0
            gD[:] = 0
            for ci in range(chunks - 1, -1, -1):
                t0 = ci * chunk
                tokens = min(length, t0 + chunk) - t0
                first[:] = 0
                for k in range(n):
                    for j in range(w):
                        first[k * width + j] = checkpoints[b, ci, k, c0 + j]
                # Recompute this chunk's states and decays from its checkpoint.
                for i in range(tokens):
                    t = t0 + i
                    _load_block(step, b, t, c0, w, st, width)
                    _load_block(u, b, t, c0, w, uu, width)
                    for j in range(width):
                        drive[j] = st[j] * uu[j]
                    for k in range(n):
                        for j in range(width):
                            x[k * width + j] = st[j] * rate[k * width + j]
                    decay = decays[i]
                    exp_into(x, decay, bits, bits_f, size)
                    previous = first if i == 0 else states[i - 1]
                    state = states[i]
                    for k in range(n):
                        bk = B[b, t, k]
                        for j in range(width):
                            kj = k * width + j
                            state[kj] = decay[kj] * previous[kj] + drive[j] * bk
                # The adjoint, backwards in time.
                for i in range(tokens - 1, -1, -1):
                    t = t0 + i
                    _load_block(step, b, t, c0, w, st, width)
                    _load_block(u, b, t, c0, w, uu, width)
                    _load_block(grad_y, b, t, c0, w, gy, width)
                    state = states[i]
                    decay = decays[i]
                    previous = first if i == 0 else states[i - 1]
                    for j in range(width):
                        drive[j] = st[j] * uu[j]
                        g_drive[j] = 0
                        g_step[j] = 0
                    if has_z:
                        _load_block(z, b, t, c0, w, zz, width)
                        for j in range(width):
                            x[j] = -zz[j]
                        exp_into(x, gate, bits, bits_f, width)
                        if has_D:
                            for j in range(w):
                                g_step[j] = D[c0 + j] * uu[j]
                        for k in range(n):
                            ck = C[b, t, k]
                            for j in range(width):
                                g_step[j] += state[k * width + j] * ck
                        for j in range(width):
                            sig = 1 / (gate[j] + 1)
                            gate[j] = gy[j] * g_step[j] * sig * (1 + zz[j] * (1 - sig))
                            gy[j] *= zz[j] * sig
                            g_step[j] = 0
                        for j in range(w):
                            grad_z[b, t, c0 + j] = gate[j]
                    if has_D:
                        for j in range(w):
                            gD[j] += gy[j] * uu[j]
                    for k in range(n):
                        ck = C[b, t, k]
                        bk = B[b, t, k]
                        for j in range(width):
                            kj = k * width + j
                            g = adjoint[kj] + gy[j] * ck
                            part_c[j] = gy[j] * state[kj]
                            part_b[j] = g * drive[j]
                            g_drive[j] += g * bk
                            term = g * previous[kj] * decay[kj]
                            g_step[j] += term * rate[kj]
                            gA[kj] += term * st[j]
                            adjoint[kj] = g * decay[kj]
                        sum_c = part_c[0]
                        sum_b = part_b[0]
                        for j in range(1, w):
                            sum_c += part_c[j]
                            sum_b += part_b[j]
                        grad_C_parts[group, b, t, k] += sum_c
                        grad_B_parts[group, b, t, k] += sum_b
                    for j in range(w):
                        grad_u[b, t, c0 + j] = g_drive[j] * st[j] + (
                            gy[j] * D[c0 + j] if has_D else 0
                        )
                        grad_step[b, t, c0 + j] = g_step[j] + g_drive[j] * uu[j]
            for k in range(n):
                for j in range(w):
                    grad_A_t[b, k, c0 + j] = gA[k * width + j]
            for j in range(w):
                grad_D[b, c0 + j] = gD[j]

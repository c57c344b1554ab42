"""The numba kernel of the selective scan's backward: the adjoint recurrence, backwards in time.

It recomputes each chunk's states from the forward's checkpoints and gives every gradient
itself (see :func:`scan_backward`); the forward kernels are in :mod:`.numba_kernels` (scalar,
any dtype) and :mod:`.numba_simd` (float32). Its per-token work runs as vector code in float32
(:mod:`.numba_simd_states`) and as the scalar loops below in float64 (gradcheck's dtype).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from .numba_kernels import _load_block, _load_step, _prefetch_inputs
from .numba_math import KERNEL_OPTIONS, LOG2_E, fast_exp2, log_two, sigmoid
from .numba_prefetch import PREFETCH_STEPS, prefetch_row
from .numba_simd_states import adjoint_token, recompute_token
from .numba_vector_math import LANES, part_row_address, row_address


@numba.njit(**KERNEL_OPTIONS)
def scan_backward(
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
    grad_y,
    checkpoints,
    has_bias,
    has_proj,
    use_softplus,
    has_D,
    has_z,
    chunk,
    groups,
    width,
    grad_u,
    grad_delta,
    grad_z,
    grad_A_t,
    grad_D,
    grad_bias,
    grad_proj_t,
    grad_B_parts,
    grad_C_parts,
    grad_low_parts,
):  # pragma: no cover - compiled
    """Gradients of :func:`scan_forward` by the adjoint recurrence, backwards in time.

    Steps visit rows in ``order``, as in the forward. Per chunk (last first), the states are
    recomputed from the chunk's checkpoint into a small
    buffer together with their decays; then ``g_t = grad_y_t C_t + exp(step_{t+1} A) g_{t+1}``
    runs backwards over it. The step's gradient goes through softplus here (times
    sigmoid(delta + bias)) into ``grad_delta``, and is summed per channel into ``grad_bias``;
    with ``has_proj`` it goes on through the projection instead: into ``grad_proj_t`` (batch, r,
    d) per block, and into the low-rank input's ``grad_low_parts`` (groups, batch, L, r), summed
    like B's.
    Work item = (batch element, group of channel blocks): B and C are shared by all channels, so
    each group sums its channels into its own slice of ``grad_B_parts`` / ``grad_C_parts``
    (groups, batch, L, n), zeroed by the caller and summed after: no two threads ever write the
    same element. grad_A_t (batch, n, d), grad_D and grad_bias (batch, d) are written per block.
    In float32 each token's recompute and adjoint run as vector code (:mod:`.numba_simd_states`).
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
        gBias = np.zeros(width, dtype)
        rank = proj_t.shape[0]
        gProj = np.zeros(rank * width, dtype)
        g_raw = np.zeros(width, dtype)
        raws = np.empty((chunk, width), dtype)  # the chunk's delta + bias and steps, computed
        steps = np.empty((chunk, width), dtype)  # once for the recompute and the adjoint
        uu = np.empty(width, dtype)
        drive = np.empty(width, dtype)
        gy = np.empty(width, dtype)
        g_drive = np.empty(width, dtype)
        g_step = np.empty(width, dtype)
        part_b = np.empty(width, dtype)
        part_c = np.empty(width, dtype)
        vector = u.itemsize == 4 and width % LANES == 0  # float32: vector code
        scratch = np.zeros((2 * n + rank) * LANES, np.float32)  # see adjoint_token
        for block in range(group, blocks, groups):
            c0 = block * width
            w = min(width, d - c0)
            rate[:] = 0
            for k in range(n):
                for j in range(w):
                    rate[k * width + j] = A_t[b, k, c0 + j] * LOG2_E  # decay = 2**(step rate)
            adjoint[:] = 0
            gA[:] = 0
            gD[:] = 0
            gBias[:] = 0
            gProj[:] = 0
            for ci in range(chunks - 1, -1, -1):
                t0 = ci * chunk
                tokens = min(length, t0 + chunk) - t0
                first[:] = 0
                for k in range(n):
                    for j in range(w):
                        first[k * width + j] = checkpoints[b, ci, k, c0 + j]
                # Recompute this chunk's states and decays from its checkpoint.
                for i in range(tokens):
                    t = order[t0 + i]
                    if i + PREFETCH_STEPS < tokens:
                        ahead = order[t0 + i + PREFETCH_STEPS]
                        _prefetch_inputs(delta, u, B, C, z, has_proj, has_z, b, ahead, c0, w)
                        prefetch_row(grad_y, (b, ahead), c0, w)
                    st = steps[i]
                    _load_step(
                        delta,
                        bias,
                        proj_t,
                        has_bias,
                        has_proj,
                        use_softplus,
                        b,
                        t,
                        c0,
                        w,
                        raws[i],
                        st,
                        width,
                    )
                    _load_block(u, b, t, c0, w, uu, width)
                    for j in range(width):
                        drive[j] = st[j] * uu[j]
                    decay = decays[i]
                    previous = first if i == 0 else states[i - 1]
                    state = states[i]
                    if vector:
                        recompute_token(
                            st.ctypes.data,
                            drive.ctypes.data,
                            rate.ctypes.data,
                            previous.ctypes.data,
                            state.ctypes.data,
                            decay.ctypes.data,
                            B.ctypes.data + b * B.strides[0] + t * B.strides[1],
                            B.strides[2],
                            n,
                            width,
                        )
                        continue
                    for k in range(n):
                        bk = B[b, t, k]
                        for j in range(width):
                            kj = k * width + j
                            decay[kj] = fast_exp2(st[j] * rate[kj])
                            state[kj] = decay[kj] * previous[kj] + drive[j] * bk
                # The adjoint, backwards in time (the recompute has just read the chunk's
                # input rows; the outputs' rows are asked for ahead of use).
                for i in range(tokens - 1, -1, -1):
                    t = order[t0 + i]
                    if i >= PREFETCH_STEPS:
                        ahead = order[t0 + i - PREFETCH_STEPS]
                        prefetch_row(grad_u, (b, ahead), c0, w)
                        if has_z:
                            prefetch_row(grad_z, (b, ahead), c0, w)
                        if has_proj:
                            prefetch_row(grad_low_parts, (group, b, ahead), 0, rank)
                        else:
                            prefetch_row(grad_delta, (b, ahead), c0, w)
                        prefetch_row(grad_B_parts, (group, b, ahead), 0, n)
                        prefetch_row(grad_C_parts, (group, b, ahead), 0, n)
                    if vector:
                        c = c0 * 4  # bytes to the block's first channel
                        before = first.ctypes.data
                        if i > 0:
                            before = states.ctypes.data + (i - 1) * states.strides[0]
                        low_rank = rank if has_proj else 0
                        adjoint_token(
                            has_z,
                            has_D,
                            use_softplus,
                            has_proj,
                            n,
                            width,
                            w,
                            low_rank,
                            steps.ctypes.data + i * steps.strides[0],
                            raws.ctypes.data + i * raws.strides[0],
                            row_address(u, b, t) + c,
                            row_address(grad_y, b, t) + c,
                            row_address(z, b, t) + c,
                            D.ctypes.data + c,
                            row_address(grad_z, b, t) + c,
                            row_address(grad_u, b, t) + c,
                            row_address(grad_delta, b, t) + c,
                            row_address(delta, b, t),
                            proj_t.ctypes.data + c,
                            proj_t.strides[0],
                            row_address(B, b, t),
                            row_address(C, b, t),
                            B.strides[2],
                            states.ctypes.data + i * states.strides[0],
                            decays.ctypes.data + i * decays.strides[0],
                            before,
                            rate.ctypes.data,
                            adjoint.ctypes.data,
                            gA.ctypes.data,
                            gD.ctypes.data,
                            gBias.ctypes.data,
                            gProj.ctypes.data,
                            scratch.ctypes.data,
                            part_row_address(grad_B_parts, group, b, t),
                            part_row_address(grad_C_parts, group, b, t),
                            part_row_address(grad_low_parts, group, b, t),
                        )
                        continue
                    raw = raws[i]
                    st = steps[i]
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
                        # y = out * silu(z): out (the pre-gate read-out) is needed for dz.
                        if has_D:
                            for j in range(w):
                                g_step[j] = D[c0 + j] * uu[j]
                        for k in range(n):
                            ck = C[b, t, k]
                            for j in range(width):
                                g_step[j] += state[k * width + j] * ck
                        for j in range(w):
                            zz = z[b, t, c0 + j]
                            sig = sigmoid(zz)
                            grad_z[b, t, c0 + j] = gy[j] * g_step[j] * sig * (1 + zz * (1 - sig))
                            gy[j] *= zz * sig
                        for j in range(width):
                            g_step[j] = 0
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
                        # d loss / d step; g_step summed term * A log2(e)
                        g = g_step[j] * log_two(g_step[j]) + g_drive[j] * uu[j]
                        if use_softplus:
                            g *= sigmoid(raw[j])
                        g_raw[j] = g
                        gBias[j] += g
                    if has_proj:
                        for q in range(rank):
                            low = delta[b, t, q]
                            for j in range(w):
                                gProj[q * width + j] += g_raw[j] * low
                            total = g_raw[0] * proj_t[q, c0]
                            for j in range(1, w):
                                total += g_raw[j] * proj_t[q, c0 + j]
                            grad_low_parts[group, b, t, q] += total
                    else:
                        for j in range(w):
                            grad_delta[b, t, c0 + j] = g_raw[j]
            for k in range(n):
                for j in range(w):
                    grad_A_t[b, k, c0 + j] = gA[k * width + j]
            for j in range(w):
                grad_D[b, c0 + j] = gD[j]
                grad_bias[b, c0 + j] = gBias[j]
            if has_proj:
                for q in range(rank):
                    for j in range(w):
                        grad_proj_t[b, q, c0 + j] = gProj[q * width + j]

"""Triton kernels of the selective scan: a forward that keeps block checkpoints, and a backward
that recomputes each block's states from its checkpoint and runs the adjoint scan back in time.

One program owns ``BLOCK_D`` channels of one batch element and walks the sequence ``BLOCK_L``
tokens at a time. Inside a block the linear recurrence ``h_t = a_t h_{t-1} + b_t`` is solved by
``tl.associative_scan`` over (a, b) pairs, which only ever multiplies decays in (0, 1]: no
overflow, whatever the step sizes. The state entering every block is stored (the checkpoint),
so the backward never keeps per-token states: memory is the inputs plus
``L / BLOCK_L * d * n`` floats. Imported only when the triton backend is used, and after
``TRITON_INTERPRET`` is set when kernels must run on CPU tensors.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _combine(a1, b1, a2, b2):
    """Compose two recurrence steps: first (a1, b1), then (a2, b2)."""
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _steps(delta_ptr, bias, offs_t, offs_d, mask, s_d, s_l, SOFTPLUS: tl.constexpr):
    """(raw step, step) for a (BLOCK_L, BLOCK_D) tile; masked tokens get step 0 (no change)."""
    raw = tl.load(
        delta_ptr + offs_t[:, None] * s_l + offs_d[None, :] * s_d, mask=mask, other=0.0
    ).to(tl.float32)
    raw = raw + bias[None, :]  # zeros without a bias
    step = raw
    if SOFTPLUS:
        step = tl.where(raw > 20.0, raw, tl.log(1.0 + tl.exp(tl.minimum(raw, 20.0))))
    return raw, tl.where(mask, step, 0.0)


@triton.jit
def selective_scan_fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, ckpt_ptr,
    L, d, n,
    su_b, su_d, su_l, sdt_b, sdt_d, sdt_l, sA_b, sA_d, sA_n,
    sB_b, sB_n, sB_l, sC_b, sC_n, sC_l, sz_b, sz_d, sz_l, so_b, so_d, so_l,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    pid_b = tl.program_id(0).to(tl.int64)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    offs_l = tl.arange(0, BLOCK_L)
    mask_d, mask_n = offs_d < d, offs_n < n
    mask_dn = mask_d[:, None] & mask_n[None, :]
    A = tl.load(
        A_ptr + pid_b * sA_b + offs_d[:, None] * sA_d + offs_n[None, :] * sA_n,
        mask=mask_dn, other=0.0,
    ).to(tl.float32)  # fmt: skip
    Dv = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    u_ptr += pid_b * su_b
    delta_ptr += pid_b * sdt_b
    B_ptr += pid_b * sB_b
    C_ptr += pid_b * sC_b
    z_ptr += pid_b * sz_b
    out_ptr += pid_b * so_b
    n_blocks = tl.cdiv(L, BLOCK_L)
    ckpt_ptr += (pid_b * n_blocks * d + offs_d[:, None]) * n + offs_n[None, :]
    h = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    for blk in range(0, n_blocks):
        tl.store(ckpt_ptr + blk * d * n, h, mask=mask_dn)
        offs_t = blk * BLOCK_L + offs_l
        mask_t = offs_t < L
        mask = mask_t[:, None] & mask_d[None, :]
        mask_tn = mask_t[:, None] & mask_n[None, :]
        _, step = _steps(delta_ptr, bias, offs_t, offs_d, mask, sdt_d, sdt_l, SOFTPLUS)
        u = tl.load(
            u_ptr + offs_t[:, None] * su_l + offs_d[None, :] * su_d, mask=mask, other=0.0
        ).to(tl.float32)
        Bt = tl.load(
            B_ptr + offs_t[:, None] * sB_l + offs_n[None, :] * sB_n, mask=mask_tn, other=0.0
        ).to(tl.float32)
        Ct = tl.load(
            C_ptr + offs_t[:, None] * sC_l + offs_n[None, :] * sC_n, mask=mask_tn, other=0.0
        ).to(tl.float32)
        decay = tl.exp(step[:, :, None] * A[None, :, :])
        inputs = (step * u)[:, :, None] * Bt[:, None, :]
        acc_decay, acc_input = tl.associative_scan((decay, inputs), 0, _combine)
        states = acc_decay * h[None, :, :] + acc_input
        y = tl.sum(states * Ct[:, None, :], 2)
        if HAS_D:
            y += u * Dv[None, :]
        if HAS_Z:
            zt = tl.load(
                z_ptr + offs_t[:, None] * sz_l + offs_d[None, :] * sz_d, mask=mask, other=0.0
            ).to(tl.float32)
            y = y * zt * tl.sigmoid(zt)
        tl.store(out_ptr + offs_t[:, None] * so_l + offs_d[None, :] * so_d, y, mask=mask)
        # Padded tokens have step 0 (decay 1, input 0), so the last row is the block's end state.
        h = tl.sum(tl.where((offs_l == BLOCK_L - 1)[:, None, None], states, 0.0), 0)


@triton.jit
def selective_scan_bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, ckpt_ptr, gout_ptr,
    gu_ptr, gdelta_ptr, gz_ptr, gB_ptr, gC_ptr, gA_ptr, gD_ptr,
    L, d, n,
    su_b, su_d, su_l, sdt_b, sdt_d, sdt_l, sA_b, sA_d, sA_n,
    sB_b, sB_n, sB_l, sC_b, sC_n, sC_l, sz_b, sz_d, sz_l, sg_b, sg_d, sg_l,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Gradients; gu, gdelta, gz are (batch, L, d) contiguous float32; gB, gC are per-channel-
    block partial sums (batch, d_blocks, L, n); gA (batch, d, n) and gD (batch, d) per batch."""
    pid_b = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    offs_l = tl.arange(0, BLOCK_L)
    mask_d, mask_n = offs_d < d, offs_n < n
    mask_dn = mask_d[:, None] & mask_n[None, :]
    A = tl.load(
        A_ptr + pid_b * sA_b + offs_d[:, None] * sA_d + offs_n[None, :] * sA_n,
        mask=mask_dn, other=0.0,
    ).to(tl.float32)  # fmt: skip
    Dv = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    u_ptr += pid_b * su_b
    delta_ptr += pid_b * sdt_b
    B_ptr += pid_b * sB_b
    C_ptr += pid_b * sC_b
    z_ptr += pid_b * sz_b
    gout_ptr += pid_b * sg_b
    tokens = pid_b * L * d
    gu_ptr += tokens
    gdelta_ptr += tokens
    gz_ptr += tokens
    partial = (pid_b * tl.num_programs(1) + pid_d) * L * n
    gB_ptr += partial
    gC_ptr += partial
    n_blocks = tl.cdiv(L, BLOCK_L)
    ckpt_ptr += (pid_b * n_blocks * d + offs_d[:, None]) * n + offs_n[None, :]
    carry = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)  # adjoint state of the next token
    grad_A = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    grad_D = tl.zeros([BLOCK_D], dtype=tl.float32)
    for i in range(0, n_blocks):
        blk = n_blocks - 1 - i
        h0 = tl.load(ckpt_ptr + blk * d * n, mask=mask_dn, other=0.0)
        offs_t = blk * BLOCK_L + offs_l
        mask_t = offs_t < L
        mask = mask_t[:, None] & mask_d[None, :]
        mask_tn = mask_t[:, None] & mask_n[None, :]
        raw, step = _steps(delta_ptr, bias, offs_t, offs_d, mask, sdt_d, sdt_l, SOFTPLUS)
        u = tl.load(
            u_ptr + offs_t[:, None] * su_l + offs_d[None, :] * su_d, mask=mask, other=0.0
        ).to(tl.float32)
        Bt = tl.load(
            B_ptr + offs_t[:, None] * sB_l + offs_n[None, :] * sB_n, mask=mask_tn, other=0.0
        ).to(tl.float32)
        Ct = tl.load(
            C_ptr + offs_t[:, None] * sC_l + offs_n[None, :] * sC_n, mask=mask_tn, other=0.0
        ).to(tl.float32)
        grad = tl.load(
            gout_ptr + offs_t[:, None] * sg_l + offs_d[None, :] * sg_d, mask=mask, other=0.0
        ).to(tl.float32)
        # Recompute this block's states from its checkpoint.
        decay = tl.exp(step[:, :, None] * A[None, :, :])
        step_u = step * u
        inputs = step_u[:, :, None] * Bt[:, None, :]
        acc_decay, acc_input = tl.associative_scan((decay, inputs), 0, _combine)
        states = acc_decay * h0[None, :, :] + acc_input
        token_offs = offs_t[:, None] * d + offs_d[None, :]
        if HAS_Z:
            zt = tl.load(
                z_ptr + offs_t[:, None] * sz_l + offs_d[None, :] * sz_d, mask=mask, other=0.0
            ).to(tl.float32)
            y = tl.sum(states * Ct[:, None, :], 2)
            if HAS_D:
                y += u * Dv[None, :]
            gate = tl.sigmoid(zt)
            tl.store(gz_ptr + token_offs, grad * y * gate * (1.0 + zt * (1.0 - gate)), mask=mask)
            grad = grad * zt * gate
        # Adjoint g_t = grad_t C_t + exp(step_{t+1} A) g_{t+1}: needs the next token's decay.
        mask_next = (offs_t + 1 < L)[:, None] & mask_d[None, :]
        _, step_next = _steps(
            delta_ptr, bias, offs_t + 1, offs_d, mask_next, sdt_d, sdt_l, SOFTPLUS
        )
        decay_next = tl.exp(step_next[:, :, None] * A[None, :, :])
        acc_decay, acc_adj = tl.associative_scan(
            (decay_next, grad[:, :, None] * Ct[:, None, :]), 0, _combine, reverse=True
        )
        adjoint = acc_decay * carry[None, :, :] + acc_adj
        carry = tl.sum(tl.where((offs_l == 0)[:, None, None], adjoint, 0.0), 0)
        # d/d(step A) of h_t = exp(step_t A) h_{t-1} + step_u_t B_t is h_t - step_u_t B_t.
        grad_log = adjoint * (states - inputs)
        grad_A += tl.sum(grad_log * step[:, :, None], 0)
        grad_step_u = tl.sum(adjoint * Bt[:, None, :], 2)
        grad_step = tl.sum(grad_log * A[None, :, :], 2) + grad_step_u * u
        grad_u = grad_step_u * step
        if HAS_D:
            grad_u += grad * Dv[None, :]
            grad_D += tl.sum(grad * u, 0)
        if SOFTPLUS:
            grad_step = grad_step * tl.sigmoid(raw)
        tl.store(gu_ptr + token_offs, grad_u, mask=mask)
        tl.store(gdelta_ptr + token_offs, grad_step, mask=mask)
        tn_offs = offs_t[:, None] * n + offs_n[None, :]
        tl.store(gB_ptr + tn_offs, tl.sum(adjoint * step_u[:, :, None], 1), mask=mask_tn)
        tl.store(gC_ptr + tn_offs, tl.sum(states * grad[:, :, None], 1), mask=mask_tn)
    dn_offs = (pid_b * d + offs_d[:, None]) * n + offs_n[None, :]
    tl.store(gA_ptr + dn_offs, grad_A, mask=mask_dn)
    if HAS_D:
        tl.store(gD_ptr + pid_b * d + offs_d, grad_D, mask=mask_d)

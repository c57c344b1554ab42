"""The float32 forward scan and conv, a token at a time, as LLVM vector code.

Why not plain numba loops: a token's work for one block of channels is a dozen short loops (the
step, softplus, the input, the state update per state row, D, the gate, the output), and LLVM
puts run-time alias and trip-count checks and a remainder loop around each of them. Here a
token's step for a block is one straight piece of ``<16 x float>`` code (:func:`token_step`, a
numba intrinsic built with :mod:`.numba_vector_math`), in three passes over the block's
16-channel groups: each group's states are read and written once per token, the read-out sum
stays in a register, and a partly filled last group uses masked loads and stores. At stage 0
(L = 110,592, d 96, n 16, two threads) the forward kernel went from 0.052 to 0.028 s
(in-process, alternating runs). :func:`conv_token` does the same for the causal conv.

The backward (:mod:`.numba_backward`) recomputes these states with the same arithmetic, and
float64 (gradcheck) runs the scalar forward (:mod:`.numba_kernels`)."""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .numba_kernels import _prefetch_inputs
from .numba_math import KERNEL_OPTIONS, LOG2_E
from .numba_prefetch import PREFETCH_STEPS, prefetch_row
from .numba_vector_math import LANES, VectorMath, each_group, row_address, vector_at

HAS_BIAS, HAS_PROJ, SOFTPLUS, HAS_D, HAS_Z, ACCUMULATE = (1 << i for i in range(6))
"""Bits of :func:`token_step`'s ``flags``."""


@intrinsic
def token_step(
    typingctx,
    flags,
    states,
    rates,
    n,
    channels,
    delta,
    rank,
    proj,
    proj_row,
    bias,
    u,
    B,
    C,
    state_step,
    D,
    z,
    y,
    scratch,
):
    """One token for a block of ``channels`` channels; every array argument is a byte address.

    ``states`` and ``rates`` hold the block's state and A log2(e), (groups, n, 16), in local
    buffers. The step is ``delta`` (``rank`` floats, times the (rank, .) projection whose rows
    start at ``proj``, ``proj_row`` bytes apart; else one float per channel) plus ``bias``,
    through softplus when asked. ``u``, ``z``, ``y``, ``D`` and ``bias`` point at the block's
    first channel; B and C at the token's first state, ``state_step`` bytes apart. ``scratch``
    holds 3 x groups x 16 floats (steps, drives, sums).

    In three passes over the 16-channel groups: every group's step and input, then every
    group's state update, then every group's output. The step (softplus) and the gate (silu)
    are long chains of dependent instructions; in passes of their own, the groups' chains run
    side by side instead of each one waiting at the head of its group's state update.
    """
    sig = types.void(*[types.intp] * 18)

    def codegen(context, builder, signature, args):
        names = (
            "flags states rates n channels delta rank proj proj_row bias u B C state_step D z y "
            "scratch"
        ).split()
        a = dict(zip(names, args))
        intp = a["states"].type
        channels = a["channels"]
        groups = builder.sdiv(builder.add(channels, intp(LANES - 1)), intp(LANES))
        group_bytes = builder.mul(groups, intp(4 * LANES))
        each_group(builder, channels, lambda g, mask: _emit_step(builder, a, g, group_bytes, mask))
        with cgutils.for_range(builder, groups) as group:
            _emit_states(builder, a, group.index, group_bytes)
        each_group(
            builder, channels, lambda g, mask: _emit_output(builder, a, g, group_bytes, mask)
        )
        return context.get_dummy_value()

    return sig, codegen


def _flag(builder: ir.IRBuilder, flags: ir.Value, bit: int) -> ir.Value:
    return builder.icmp_unsigned("!=", builder.and_(flags, flags.type(bit)), flags.type(0))


def _scratch(builder: ir.IRBuilder, a: dict, part: int, g: ir.Value, group_bytes: ir.Value):
    """The address of group g's vector in part 0 (steps), 1 (drives) or 2 (sums) of scratch."""
    intp = g.type
    start = builder.add(a["scratch"], builder.mul(group_bytes, intp(part)))
    return vector_at(builder, start, builder.mul(g, intp(4 * LANES)))


def _emit_step(builder, a: dict, g: ir.Value, group_bytes: ir.Value, mask) -> None:
    """Pass 1 for group g: its step and drive (step x input) into scratch; padding lanes get
    step 0 (no decay, no input)."""
    v = VectorMath(builder, mask)
    intp = g.type
    offset = builder.mul(g, intp(4 * LANES))  # bytes from the block's first channel
    flags = a["flags"]
    step_slot = cgutils.alloca_once_value(builder, v.const(0.0))
    with builder.if_else(_flag(builder, flags, HAS_PROJ)) as (projected, direct):
        with projected:
            with cgutils.for_range(builder, a["rank"]) as q:
                low = v.scalar(builder.add(a["delta"], builder.mul(q.index, intp(4))))
                row = builder.add(a["proj"], builder.mul(q.index, a["proj_row"]))
                weights = v.load(builder.add(row, offset))
                builder.store(v.fma(low, weights, builder.load(step_slot)), step_slot)
        with direct:
            builder.store(v.load(builder.add(a["delta"], offset)), step_slot)
    with builder.if_then(_flag(builder, flags, HAS_BIAS)):
        bias = v.load(builder.add(a["bias"], offset))
        builder.store(v.add(builder.load(step_slot), bias), step_slot)
    with builder.if_then(_flag(builder, flags, SOFTPLUS)):
        builder.store(v.softplus(builder.load(step_slot)), step_slot)
    step = builder.load(step_slot)
    if mask is not None:
        step = builder.select(mask, step, v.const(0.0))
    builder.store(step, _scratch(builder, a, 0, g, group_bytes), align=4)
    drive = v.mul(step, v.load(builder.add(a["u"], offset)))
    builder.store(drive, _scratch(builder, a, 1, g, group_bytes), align=4)


def _emit_states(builder, a: dict, g: ir.Value, group_bytes: ir.Value) -> None:
    """Pass 2 for group g: its n states, h = 2**(step rate) h + drive B_k, and their read-out
    sum_k h C_k into scratch (all 16 lanes: the buffers are padded)."""
    v = VectorMath(builder)
    intp = g.type
    step = builder.load(_scratch(builder, a, 0, g, group_bytes), align=4)
    drive = builder.load(_scratch(builder, a, 1, g, group_bytes), align=4)
    first = builder.mul(builder.mul(g, a["n"]), intp(4 * LANES))
    out_slot = cgutils.alloca_once_value(builder, v.const(0.0))
    with cgutils.for_range(builder, a["n"]) as loop:
        k = loop.index
        offset = builder.add(first, builder.mul(k, intp(4 * LANES)))
        state_address = vector_at(builder, a["states"], offset)
        rate_address = vector_at(builder, a["rates"], offset)
        b_k = v.scalar(builder.add(a["B"], builder.mul(k, a["state_step"])))
        c_k = v.scalar(builder.add(a["C"], builder.mul(k, a["state_step"])))
        decay = v.exp2(v.mul(step, builder.load(rate_address, align=4)))
        state = v.fma(decay, builder.load(state_address, align=4), v.mul(drive, b_k))
        builder.store(state, state_address, align=4)
        builder.store(v.fma(state, c_k, builder.load(out_slot)), out_slot)
    builder.store(builder.load(out_slot), _scratch(builder, a, 2, g, group_bytes), align=4)


def _emit_output(builder, a: dict, g: ir.Value, group_bytes: ir.Value, mask) -> None:
    """Pass 3 for group g: y (+)= (sum + D u) silu(z), into the lanes that exist."""
    v = VectorMath(builder, mask)
    intp = g.type
    offset = builder.mul(g, intp(4 * LANES))
    flags = a["flags"]
    out_slot = cgutils.alloca_once_value(
        builder, builder.load(_scratch(builder, a, 2, g, group_bytes), align=4)
    )
    with builder.if_then(_flag(builder, flags, HAS_D)):
        inputs = v.load(builder.add(a["u"], offset))
        skip = v.fma(v.load(builder.add(a["D"], offset)), inputs, builder.load(out_slot))
        builder.store(skip, out_slot)
    with builder.if_then(_flag(builder, flags, HAS_Z)):
        gate = v.silu(v.load(builder.add(a["z"], offset)))
        builder.store(v.mul(builder.load(out_slot), gate), out_slot)
    y = builder.add(a["y"], offset)
    with builder.if_then(_flag(builder, flags, ACCUMULATE)):
        builder.store(v.add(builder.load(out_slot), v.load(y)), out_slot)
    v.store(builder.load(out_slot), y)


@intrinsic
def conv_token(typingctx, taps, width, weight, weight_row, bias, out, channels):
    """SiLU(causal depthwise conv) of one token, all channels; every array is a byte address.

    ``taps`` holds the ``width`` input rows' addresses, oldest first (a row of zeros before the
    sequence starts); ``weight`` is the (width, channels) weight_t, ``weight_row`` bytes per row;
    ``bias`` and ``out`` hold ``channels`` floats. numba_conv.conv_silu_forward's arithmetic."""
    sig = types.void(*[types.intp] * 7)

    def codegen(context, builder, signature, args):
        def group(g, mask):
            _emit_conv_group(builder, args, builder.mul(g, g.type(4 * LANES)), mask)

        each_group(builder, args[-1], group)
        return context.get_dummy_value()

    return sig, codegen


def _emit_conv_group(builder: ir.IRBuilder, args: list, offset: ir.Value, mask) -> None:
    """:func:`conv_token` for the 16 channels ``offset`` bytes in (``mask``: those that exist)."""
    taps, width, weight, weight_row, bias, out, _ = args
    v = VectorMath(builder, mask)
    intp = taps.type
    tap_addresses = builder.inttoptr(taps, intp.as_pointer())
    acc_slot = cgutils.alloca_once_value(builder, v.load(builder.add(bias, offset)))
    with cgutils.for_range(builder, width) as tap:
        row = builder.load(builder.gep(tap_addresses, [tap.index]))
        inputs = v.load(builder.add(row, offset))
        w = v.load(builder.add(builder.add(weight, builder.mul(tap.index, weight_row)), offset))
        builder.store(v.fma(w, inputs, builder.load(acc_slot)), acc_slot)
    pre = builder.load(acc_slot)
    decay = v.exp(v.sub(v.const(0.0), pre))
    v.store(builder.fdiv(pre, v.add(decay, v.const(1.0))), builder.add(out, offset))


@numba.njit(**KERNEL_OPTIONS)
def scan_forward_groups(
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
    """numba_kernels.scan_forward for float32, with the same arguments and results: each token
    of a block is one :func:`token_step` over its 16-channel groups. The states live group by group,
    (groups, n, 16), so that each group's are contiguous."""
    batch, length, d = u.shape
    n = A_t.shape[1]
    blocks = (d + width - 1) // width
    flags = (
        (HAS_BIAS if has_bias else 0)
        | (HAS_PROJ if has_proj else 0)
        | (SOFTPLUS if use_softplus else 0)
        | (HAS_D if has_D else 0)
        | (HAS_Z if has_z else 0)
        | (ACCUMULATE if accumulate else 0)
    )
    rank = delta.shape[2]
    for item in prange(batch * blocks):
        b = item // blocks
        c0 = (item % blocks) * width
        w = min(width, d - c0)
        groups = (w + LANES - 1) // LANES
        states = np.zeros(groups * n * LANES, np.float32)
        rates = np.zeros(groups * n * LANES, np.float32)
        for g in range(groups):
            for k in range(n):
                for lane in range(min(LANES, w - g * LANES)):
                    rates[(g * n + k) * LANES + lane] = A_t[b, k, c0 + g * LANES + lane] * LOG2_E
        scratch = np.zeros(3 * groups * LANES, np.float32)  # steps, drives, sums
        for i in range(length):
            t = order[i]
            if i + PREFETCH_STEPS < length:
                ahead = order[i + PREFETCH_STEPS]
                _prefetch_inputs(delta, u, B, C, z, has_proj, has_z, b, ahead, c0, w)
                prefetch_row(y, (b, ahead), c0, w)
            if save and i % chunk == 0:
                for g in range(groups):
                    for k in range(n):
                        for lane in range(min(LANES, w - g * LANES)):
                            checkpoints[b, i // chunk, k, c0 + g * LANES + lane] = states[
                                (g * n + k) * LANES + lane
                            ]
            c = c0 * 4  # the block's first channel, in bytes
            token_step(
                flags,
                states.ctypes.data,
                rates.ctypes.data,
                n,
                w,
                row_address(delta, b, t) + (0 if has_proj else c),
                rank,
                proj_t.ctypes.data + c,
                proj_t.strides[0],
                bias.ctypes.data + c,
                row_address(u, b, t) + c,
                row_address(B, b, t),
                row_address(C, b, t),
                B.strides[2],
                D.ctypes.data + c,
                row_address(z, b, t) + c,
                row_address(y, b, t) + c,
                scratch.ctypes.data,
            )

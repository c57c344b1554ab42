"""The float32 forward scan, one token of a 16-channel group at a time, as LLVM vector code.

Why not plain numba loops: a token's work for one block of channels is a dozen short loops (the
step, softplus, the input, the state update per state row, D, the gate, the output), and LLVM
puts run-time alias and trip-count checks and a remainder loop around each of them. Here the
whole token step of a 16-channel group is one straight piece of ``<16 x float>`` code
(:func:`group_step`, a numba intrinsic built with :mod:`.numba_vector_math`): the group's states
are read and written once per token, the read-out sum stays in a register, and a partly filled
last group uses masked loads and stores. At stage 0 (L = 110,592, d 96, n 16, two threads) the
forward kernel went from 0.052 to 0.035 s (in-process, alternating runs).

The backward stays scalar numba (:mod:`.numba_kernels`); it recomputes these states with the
same arithmetic, and float64 (gradcheck) runs the scalar forward."""

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
from .numba_vector_math import FLOAT_VECTOR, INT_VECTOR, LANES, VectorMath, splat_int

HAS_BIAS, HAS_PROJ, SOFTPLUS, HAS_D, HAS_Z, ACCUMULATE = (1 << i for i in range(6))
"""Bits of :func:`group_step`'s ``flags``."""


@intrinsic
def group_step(
    typingctx,
    flags,
    states,
    rates,
    n,
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
    valid,
):
    """One token for one group of 16 channels; every array argument is a byte address.

    ``states`` and ``rates`` are the group's (n, 16) state and A log2(e), in a local buffer.
    The step is ``delta`` (``rank`` floats, times the (rank, .) projection whose rows start at
    ``proj``, ``proj_row`` bytes apart; else 16 floats) plus ``bias``, through softplus when
    asked. ``u``, ``z``, ``y``, ``D`` and ``bias`` point at the group's first channel; B and C at
    the token's first state, ``state_step`` bytes apart. Lanes from ``valid`` on are left alone.
    """
    sig = types.void(types.intp, *[types.intp] * 16)

    def codegen(context, builder, signature, args):
        valid = args[-1]
        full = builder.icmp_signed("==", valid, valid.type(LANES))
        with builder.if_else(full) as (whole, partial):
            with whole:
                _emit_group_step(builder, args, None)
            with partial:
                lanes = builder.trunc(splat_int(builder, valid), INT_VECTOR)
                in_group = ir.Constant(INT_VECTOR, list(range(LANES)))
                _emit_group_step(builder, args, builder.icmp_signed("<", in_group, lanes))
        return context.get_dummy_value()

    return sig, codegen


def _emit_group_step(builder: ir.IRBuilder, args: list, mask: ir.Value | None) -> None:
    """:func:`group_step`'s body; ``mask`` (None: all 16 lanes) marks the channels that exist.
    Emitted twice, so that whole groups use plain loads and stores (masked ones are emulated,
    lane by lane, on machines without them)."""
    (flags, states, rates, n, delta, rank, proj, proj_row, bias, u, B, C, state_step, D, z, y) = (
        args[:-1]
    )
    v = VectorMath(builder, mask)
    intp = states.type

    def flag(bit):
        return builder.icmp_unsigned("!=", builder.and_(flags, intp(bit)), intp(0))

    # the step: delta (projected) + bias, softplus
    step_slot = cgutils.alloca_once_value(builder, v.const(0.0))
    with builder.if_else(flag(HAS_PROJ)) as (projected, direct):
        with projected:
            with cgutils.for_range(builder, rank) as loop:
                low = v.scalar(builder.add(delta, builder.mul(loop.index, intp(4))))
                row = v.load(builder.add(proj, builder.mul(loop.index, proj_row)))
                builder.store(v.fma(low, row, builder.load(step_slot)), step_slot)
        with direct:
            builder.store(v.load(delta), step_slot)
    with builder.if_then(flag(HAS_BIAS)):
        builder.store(v.add(builder.load(step_slot), v.load(bias)), step_slot)
    with builder.if_then(flag(SOFTPLUS)):
        builder.store(v.softplus(builder.load(step_slot)), step_slot)
    step = builder.load(step_slot)
    if mask is not None:
        step = builder.select(mask, step, v.const(0.0))  # padding lanes: no decay, no input
    inputs = v.load(u)
    drive = v.mul(step, inputs)

    # the state update and its read-out, state by state
    out_slot = cgutils.alloca_once_value(builder, v.const(0.0))
    with cgutils.for_range(builder, n) as loop:
        offset = builder.mul(loop.index, intp(4 * LANES))
        state_address = builder.inttoptr(builder.add(states, offset), FLOAT_VECTOR.as_pointer())
        rate_address = builder.inttoptr(builder.add(rates, offset), FLOAT_VECTOR.as_pointer())
        b_k = v.scalar(builder.add(B, builder.mul(loop.index, state_step)))
        c_k = v.scalar(builder.add(C, builder.mul(loop.index, state_step)))
        decay = v.exp2(v.mul(step, builder.load(rate_address, align=4)))
        state = v.fma(decay, builder.load(state_address, align=4), v.mul(drive, b_k))
        builder.store(state, state_address, align=4)
        builder.store(v.fma(state, c_k, builder.load(out_slot)), out_slot)

    with builder.if_then(flag(HAS_D)):
        builder.store(v.fma(v.load(D), inputs, builder.load(out_slot)), out_slot)
    with builder.if_then(flag(HAS_Z)):
        builder.store(v.mul(builder.load(out_slot), v.silu(v.load(z))), out_slot)
    with builder.if_then(flag(ACCUMULATE)):
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
        taps, width, weight, weight_row, bias, out, channels = args
        intp = taps.type
        whole = builder.sdiv(channels, intp(LANES))
        with cgutils.for_range(builder, whole) as group:
            _emit_conv_group(builder, args, builder.mul(group.index, intp(4 * LANES)), None)
        rest = builder.sub(channels, builder.mul(whole, intp(LANES)))
        with builder.if_then(builder.icmp_signed(">", rest, intp(0))):
            lanes = builder.trunc(splat_int(builder, rest), INT_VECTOR)
            mask = builder.icmp_signed("<", ir.Constant(INT_VECTOR, list(range(LANES))), lanes)
            _emit_conv_group(builder, args, builder.mul(whole, intp(4 * LANES)), mask)
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


@numba.njit(inline="always")
def row_address(array, b, t):  # pragma: no cover - compiled
    """The byte address of ``array[b, t, 0]``."""
    return array.ctypes.data + b * array.strides[0] + t * array.strides[1]


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
    of a block is :func:`group_step` on its 16-channel groups. The states live group by group,
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
        group_bytes = n * LANES * 4
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
            delta_row = row_address(delta, b, t)
            u_row, z_row, y_row = row_address(u, b, t), row_address(z, b, t), row_address(y, b, t)
            B_row, C_row = row_address(B, b, t), row_address(C, b, t)
            for g in range(groups):
                c = (c0 + g * LANES) * 4  # the group's first channel, in bytes
                group_step(
                    flags,
                    states.ctypes.data + g * group_bytes,
                    rates.ctypes.data + g * group_bytes,
                    n,
                    delta_row if has_proj else delta_row + c,
                    rank,
                    proj_t.ctypes.data + c,
                    proj_t.strides[0],
                    bias.ctypes.data + c,
                    u_row + c,
                    B_row,
                    C_row,
                    B.strides[2],
                    D.ctypes.data + c,
                    z_row + c,
                    y_row + c,
                    min(LANES, w - g * LANES),
                )

"""The backward scan's per-token work for float32, as LLVM vector code (see :mod:`.numba_simd`).

The backward (numba_backward.scan_backward) recomputes each chunk's states and decays from the
chunk's checkpoint, then runs the adjoint backwards over them. Both per-token steps get the
forward's treatment: one ``<16 x float>`` piece of code per token (:func:`recompute_token`,
:func:`adjoint_token`) instead of a dozen short loops with LLVM's run-time checks around each.
They work in the scalar backward's own layout, a token's states ``(n, width)`` with the block's
channels innermost, and do its arithmetic in its order; float64 (gradcheck) keeps the scalar
loops. At stage 0 (L = 110,592, d 96, two threads) the scan's backward went from 0.24 to 0.145 s."""

from __future__ import annotations

from functools import partial

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .numba_vector_math import LANES, VectorMath, each_group, vector_at


@intrinsic
def recompute_token(typingctx, steps, drives, rates, previous, states, decays, B, state_step, n,
                    width):  # fmt: skip
    """For one token: decays = 2**(steps rates), states = decays previous + drives B_k, over
    the (n, width) state of a block (``width`` a multiple of 16, padding channels with step and
    drive 0). Every array argument is a byte address: ``steps`` and ``drives`` hold ``width``
    floats, ``rates``, ``previous``, ``states`` and ``decays`` n x width, B the token's n
    values ``state_step`` bytes apart."""
    sig = types.void(*[types.intp] * 10)

    def codegen(context, builder, signature, args):
        steps, drives, rates, previous, states, decays, B, state_step, n, width = args
        intp = steps.type
        v = VectorMath(builder)
        row_bytes = builder.mul(width, intp(4))
        at = partial(vector_at, builder)
        groups = builder.sdiv(width, intp(LANES))
        with cgutils.for_range(builder, groups) as group:
            column = builder.mul(group.index, intp(4 * LANES))
            step = builder.load(at(steps, column), align=4)
            drive = builder.load(at(drives, column), align=4)
            with cgutils.for_range(builder, n) as loop:
                offset = builder.add(builder.mul(loop.index, row_bytes), column)
                b_k = v.scalar(builder.add(B, builder.mul(loop.index, state_step)))
                decay = v.exp2(v.mul(step, builder.load(at(rates, offset), align=4)))
                before = builder.load(at(previous, offset), align=4)
                builder.store(decay, at(decays, offset), align=4)
                state = v.fma(decay, before, v.mul(drive, b_k))
                builder.store(state, at(states, offset), align=4)
        return context.get_dummy_value()

    return sig, codegen


ADJOINT_ARGUMENTS = (
    "has_z has_D softplus has_proj n width channels rank steps raws u grad_y z D grad_z grad_u "
    "grad_delta low proj proj_row B C state_step states decays previous rates adjoint gA gD "
    "gBias gProj scratch grad_B grad_C grad_low"
).split()
"""The arguments of :func:`adjoint_token`, in order."""


@intrinsic
def adjoint_token(
    typingctx,
    has_z,
    has_D,
    softplus,
    has_proj,
    n,
    width,
    channels,
    rank,
    steps,
    raws,
    u,
    grad_y,
    z,
    D,
    grad_z,
    grad_u,
    grad_delta,
    low,
    proj,
    proj_row,
    B,
    C,
    state_step,
    states,
    decays,
    previous,
    rates,
    adjoint,
    gA,
    gD,
    gBias,
    gProj,
    scratch,
    grad_B,
    grad_C,
    grad_low,
):
    """One token of the backward scan's adjoint, for a block of ``channels`` channels (padded
    to ``width``, a multiple of 16), as numba_backward.scan_backward's loop computes it; every
    array argument is a byte address (:data:`ADJOINT_ARGUMENTS`).

    Row arguments (u, grad_y, z, D, grad_z, grad_u, grad_delta, the projection's rows, ``proj_row``
    bytes apart) point at the block's first channel; ``low`` at the token's low-rank step input,
    B and C at its states (``state_step`` bytes apart); grad_B, grad_C and grad_low at this work
    item's rows of their per-group sums, which are added to. ``steps``, ``raws``: the token's
    step and delta + bias, ``width`` floats; ``states``, ``decays``, ``previous``, ``rates``,
    ``adjoint`` and ``gA``: n x width; ``gD``, ``gBias``: width; ``gProj``: rank x width;
    ``scratch``: (2 n + rank) x 16 floats. The sums over channels (for B, C and the low-rank
    input) are built lane-wise across the block's groups and totalled once per token.
    """
    sig = types.void(*[types.intp] * len(ADJOINT_ARGUMENTS))

    def codegen(context, builder, signature, values):
        a = dict(zip(ADJOINT_ARGUMENTS, values))
        intp = a["n"].type
        v = VectorMath(builder)
        at = partial(vector_at, builder)

        # zero the token's lane-wise sums
        parts = builder.add(builder.mul(a["n"], intp(2)), a["rank"])
        with cgutils.for_range(builder, parts) as part:
            builder.store(
                v.const(0.0), at(a["scratch"], builder.mul(part.index, intp(64))), align=4
            )

        each_group(builder, a["channels"], partial(_emit_adjoint_group, builder, a))

        # the token's sums over channels: grad_C[k], grad_B[k], grad_low[q]
        float_pointer = ir.FloatType().as_pointer()
        for name, first_part, count in (
            ("grad_C", intp(0), a["n"]),
            ("grad_B", a["n"], a["n"]),
            ("grad_low", builder.mul(a["n"], intp(2)), a["rank"]),
        ):
            with cgutils.for_range(builder, count) as item:
                part = builder.add(first_part, item.index)
                lanes_sum = v.total(
                    builder.load(at(a["scratch"], builder.mul(part, intp(64))), align=4)
                )
                address = builder.add(a[name], builder.mul(item.index, intp(4)))  # contiguous
                target = builder.inttoptr(address, float_pointer)
                builder.store(builder.fadd(builder.load(target), lanes_sum), target)
        return context.get_dummy_value()

    return sig, codegen


def _emit_adjoint_group(builder, a: dict, g, mask) -> None:
    """The adjoint for one 16-channel group ``g`` of the block (``mask``: its channels that
    exist, None for all); local buffers are read whole, rows of the tensors through the mask."""
    intp = g.type
    v = VectorMath(builder, mask)
    whole = VectorMath(builder)
    column = builder.mul(g, intp(4 * LANES))
    row_bytes = builder.mul(a["width"], intp(4))
    at = partial(vector_at, builder)

    def local(base, offset=column):
        return builder.load(at(base, offset), align=4)

    def flag(name):
        return builder.icmp_unsigned("!=", a[name], intp(0))

    def row(name):
        return v.load(builder.add(a[name], column))

    step, raw = local(a["steps"]), local(a["raws"])
    inputs = row("u")
    gy_slot = cgutils.alloca_once_value(builder, row("grad_y"))
    drive = v.mul(step, inputs)
    with builder.if_then(flag("has_z")):
        # y = out silu(z): the pre-gate read-out is needed for dz
        pre_slot = cgutils.alloca_once_value(builder, v.const(0.0))
        with builder.if_then(flag("has_D")):
            builder.store(v.mul(row("D"), inputs), pre_slot)
        with cgutils.for_range(builder, a["n"]) as loop:
            offset = builder.add(builder.mul(loop.index, row_bytes), column)
            c_k = v.scalar(builder.add(a["C"], builder.mul(loop.index, a["state_step"])))
            builder.store(v.fma(local(a["states"], offset), c_k, builder.load(pre_slot)), pre_slot)
        gate = row("z")
        sig = v.sigmoid(gate)
        gy = builder.load(gy_slot)
        slope = v.add(v.const(1.0), v.mul(gate, v.sub(v.const(1.0), sig)))
        v.store(
            v.mul(v.mul(v.mul(gy, builder.load(pre_slot)), sig), slope),
            builder.add(a["grad_z"], column),
        )
        builder.store(v.mul(gy, v.mul(gate, sig)), gy_slot)
    gy = builder.load(gy_slot)
    with builder.if_then(flag("has_D")):
        total = v.fma(gy, inputs, local(a["gD"]))
        builder.store(total, at(a["gD"], column), align=4)

    g_drive_slot = cgutils.alloca_once_value(builder, v.const(0.0))
    g_step_slot = cgutils.alloca_once_value(builder, v.const(0.0))
    with cgutils.for_range(builder, a["n"]) as loop:
        k = loop.index
        offset = builder.add(builder.mul(k, row_bytes), column)
        c_k = v.scalar(builder.add(a["C"], builder.mul(k, a["state_step"])))
        b_k = v.scalar(builder.add(a["B"], builder.mul(k, a["state_step"])))
        decay = local(a["decays"], offset)
        g = v.fma(gy, c_k, local(a["adjoint"], offset))
        sum_c = at(a["scratch"], builder.mul(k, intp(64)))
        builder.store(
            v.fma(gy, local(a["states"], offset), builder.load(sum_c, align=4)), sum_c, align=4
        )
        sum_b = at(a["scratch"], builder.mul(builder.add(a["n"], k), intp(64)))
        builder.store(v.fma(g, drive, builder.load(sum_b, align=4)), sum_b, align=4)
        builder.store(v.fma(g, b_k, builder.load(g_drive_slot)), g_drive_slot)
        term = v.mul(v.mul(g, local(a["previous"], offset)), decay)
        builder.store(
            v.fma(term, local(a["rates"], offset), builder.load(g_step_slot)), g_step_slot
        )
        builder.store(v.fma(term, step, local(a["gA"], offset)), at(a["gA"], offset), align=4)
        builder.store(v.mul(g, decay), at(a["adjoint"], offset), align=4)

    g_drive = builder.load(g_drive_slot)
    grad_u_slot = cgutils.alloca_once_value(builder, v.mul(g_drive, step))
    with builder.if_then(flag("has_D")):
        builder.store(v.fma(gy, row("D"), builder.load(grad_u_slot)), grad_u_slot)
    v.store(builder.load(grad_u_slot), builder.add(a["grad_u"], column))
    # d loss / d step: g_step summed term * A log2(e), so times ln 2
    g_raw_slot = cgutils.alloca_once_value(
        builder,
        v.fma(builder.load(g_step_slot), v.const(0.6931471805599453), v.mul(g_drive, inputs)),
    )
    with builder.if_then(flag("softplus")):
        builder.store(v.mul(builder.load(g_raw_slot), whole.sigmoid(raw)), g_raw_slot)
    g_raw = builder.load(g_raw_slot)
    builder.store(v.add(local(a["gBias"]), g_raw), at(a["gBias"], column), align=4)
    with builder.if_else(flag("has_proj")) as (projected, direct):
        with projected:
            with cgutils.for_range(builder, a["rank"]) as q:
                low = v.scalar(builder.add(a["low"], builder.mul(q.index, intp(4))))
                offset = builder.add(builder.mul(q.index, row_bytes), column)
                builder.store(
                    v.fma(g_raw, low, local(a["gProj"], offset)), at(a["gProj"], offset), align=4
                )
                weights = v.load(
                    builder.add(builder.add(a["proj"], builder.mul(q.index, a["proj_row"])), column)
                )
                part = builder.add(builder.mul(a["n"], intp(2)), q.index)
                sum_low = at(a["scratch"], builder.mul(part, intp(64)))
                builder.store(
                    v.fma(g_raw, weights, builder.load(sum_low, align=4)), sum_low, align=4
                )
        with direct:
            v.store(g_raw, builder.add(a["grad_delta"], column))

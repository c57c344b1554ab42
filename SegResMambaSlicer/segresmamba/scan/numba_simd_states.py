"""The backward scan's state recompute for float32, as LLVM vector code (see :mod:`.numba_simd`).

The backward recomputes each chunk's states and decays from the chunk's checkpoint before it
runs the adjoint over them. That recompute is the forward's state update, so it gets the same
treatment: one ``<16 x float>`` piece of code per token (:func:`recompute_token`) instead of
a short loop per state row with LLVM's run-time checks around each. It works in the scalar
backward's own layout, a token's states ``(n, width)`` with the block's channels innermost.
"""

from __future__ import annotations

from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .numba_vector_math import FLOAT_VECTOR, LANES, VectorMath


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
        pointer = FLOAT_VECTOR.as_pointer()
        row_bytes = builder.mul(width, intp(4))

        def at(base, offset):
            return builder.inttoptr(builder.add(base, offset), pointer)

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

"""exp, softplus and sigmoid for the numba kernels, written so that LLVM vectorises them.

numba on most machines has no vectorised math library (no SVML in the pip wheels of llvmlite),
and a scalar libm call per element would cost more than the scan itself. So float32 uses
Cephes' expf and logf (range reduction, a short polynomial, the power of two or the exponent
taken from the float's bits), within about 2 ulp of the exact values; float64 (gradcheck's dtype)
calls ``math``. The bit casts are LLVM ``bitcast`` instructions, which keep a loop that calls these
functions one plain vector loop.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from .numba_target import prefer_full_vector_width

prefer_full_vector_width()  # before the first kernel is defined (see numba_target)

__all__ = [
    "KERNEL_OPTIONS",
    "LOG2_E",
    "exp_into",
    "fast_exp",
    "fast_exp2",
    "log_two",
    "sigmoid",
    "softplus",
]

_F = np.float32
_LOG2E = _F(1.44269504088896341)
_LN2_HI = _F(0.693359375)
_LN2_LO = _F(-2.12194440e-4)
LOG2_E = 1.4426950408889634
"""log2(e): exp(x) = exp2(x * LOG2_E). The scan kernels scale A by it once per block, so that
each decay is one exp2 (its range reduction is a plain rounding)."""
_EXP2_P = tuple(
    _F(c)
    for c in (
        1.535336188319500e-4,
        1.339887440266574e-3,
        9.618437357674640e-3,
        5.550332471162809e-2,
        2.402264791363012e-1,
        6.931472028550421e-1,
    )
)
_LOW2, _HIGH2 = _F(-126.0), _F(127.0)
_EXP_P = tuple(
    _F(c)
    for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1)
)
_ZERO, _HALF, _ONE, _BIAS, _MANTISSA = _F(0.0), _F(0.5), _F(1.0), _F(127.0), _F(8388608.0)
_LOW, _HIGH = _F(-87.3), _F(88.3)
_ROUND = _F(12582912.0)
"""1.5 * 2**23: adding and subtracting it rounds a float32 to an integer. It needs IEEE rounding
of every sum, which is why the kernels allow no fastmath reassociation (see KERNEL_OPTIONS)."""
_SQRT_TWO = _F(1.41421356237309505)
_LOG_P = tuple(
    _F(c)
    for c in (
        7.0376836292e-2,
        -1.1514610310e-1,
        1.1676998740e-1,
        -1.2420140846e-1,
        1.4249322787e-1,
        -1.6668057665e-1,
        2.0000714765e-1,
        -2.4999993993e-1,
        3.3333331174e-1,
    )
)

KERNEL_OPTIONS = dict(
    parallel=True, cache=True, nogil=True, error_model="numpy", fastmath={"contract"}
)
"""numba options of every scan and conv kernel. ``contract`` lets LLVM fuse a multiply and the
add after it into one FMA instruction: the exp polynomial and the state update are chains of
them, and without it each pair is two instructions (the forward scan takes 1.45 times as long).
An FMA rounds once instead of twice, so results only get closer to the exact ones; the other
fastmath flags (reassociation, no-NaN assumptions) stay off, as the rounding tricks above and the
NaN checks need them off."""


@intrinsic
def _int_bits_as_float(typingctx, value):
    """The float32 whose IEEE bits are the int32 ``value``."""
    if value != types.int32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@intrinsic
def _float_bits_as_int(typingctx, value):
    """The int32 holding the IEEE bits of the float32 ``value``."""
    if value != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


def fast_exp(x):  # pragma: no cover - replaced when compiled
    """exp(x): Cephes' expf for float32, ``math.exp`` for float64."""
    return math.exp(x)


@overload(fast_exp, inline="always", jit_options={"cache": True})
def _fast_exp_overload(x):
    if x != types.float32:
        return lambda x: math.exp(x)

    def exp32(x):  # pragma: no cover - compiled
        v = min(max(x, _LOW), _HIGH)
        k = (v * _LOG2E + _ROUND) - _ROUND  # round to nearest, branch-free
        r = v - k * _LN2_HI - k * _LN2_LO
        p0, p1, p2, p3, p4 = _EXP_P
        p = ((((p0 * r + p1) * r + p2) * r + p3) * r + p4) * r + _HALF
        power = _int_bits_as_float(np.int32((k + _BIAS) * _MANTISSA))  # 2**k
        return (p * (r * r) + r + _ONE) * power

    return exp32


def fast_exp2(x):  # pragma: no cover - replaced when compiled
    """2**x: Cephes' exp2f for float32, ``math.pow`` for float64."""
    return 2.0**x


@overload(fast_exp2, inline="always", jit_options={"cache": True})
def _fast_exp2_overload(x):
    if x != types.float32:
        return lambda x: math.pow(2.0, x)

    def exp2_32(x):  # pragma: no cover - compiled
        v = min(max(x, _LOW2), _HIGH2)
        k = (v + _ROUND) - _ROUND  # the nearest integer: v = k + r, |r| <= 1/2
        r = v - k
        p0, p1, p2, p3, p4, p5 = _EXP2_P
        p = (((((p0 * r + p1) * r + p2) * r + p3) * r + p4) * r + p5) * r + _ONE
        return p * _int_bits_as_float(np.int32((k + _BIAS) * _MANTISSA))

    return exp2_32


def log_two(like):  # pragma: no cover - replaced when compiled
    """ln(2) in the type of ``like`` (float32 stays float32)."""
    return math.log(2.0)


@overload(log_two, inline="always", jit_options={"cache": True})
def _log_two_overload(like):
    value = _F(math.log(2.0)) if like == types.float32 else math.log(2.0)
    return lambda like: value


def _log1p_small(a):  # pragma: no cover - replaced when compiled
    """log(1 + a) for 0 <= a <= 1."""
    return math.log1p(a)


@overload(_log1p_small, inline="always", jit_options={"cache": True})
def _log1p_small_overload(a):
    if a != types.float32:
        return lambda a: math.log1p(a)

    def log1p32(a):  # pragma: no cover - compiled
        u = _ONE + a
        bits = _float_bits_as_int(u)
        exponent = _F((bits >> 23) - 127)  # u = 2**exponent * m, m in [1, 2)
        m = _int_bits_as_float(np.int32((bits & 0x007FFFFF) | 0x3F800000))
        big = m > _SQRT_TWO
        m = m * _HALF if big else m  # m in [sqrt(1/2), sqrt(2)): log(m) is a short series
        exponent = exponent + _ONE if big else exponent
        f = m - _ONE
        z = f * f
        q = _LOG_P[0]
        for c in _LOG_P[1:]:
            q = q * f + c
        log_u = f + (f * z * q - _HALF * z) + exponent * _LN2_LO + exponent * _LN2_HI
        rounded = u - _ONE  # Goldberg: log1p(a) = log(u) * a / (u - 1), exact when u rounds to 1
        return a if rounded == _ZERO else log_u * (a / rounded)

    return log1p32


def softplus(x):  # pragma: no cover - replaced when compiled
    """log(1 + exp(x)) without overflow: max(x, 0) + log1p(exp(-|x|))."""
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


@overload(softplus, inline="always", jit_options={"cache": True})
def _softplus_overload(x):
    zero = _ZERO if x == types.float32 else 0.0  # float32 stays float32, no promotion

    def implementation(x):  # pragma: no cover - compiled
        return max(x, zero) + _log1p_small(fast_exp(-abs(x)))

    return implementation


def sigmoid(x):  # pragma: no cover - replaced when compiled
    """1 / (1 + exp(-x)), the derivative of :func:`softplus`."""
    return 1.0 / (math.exp(-x) + 1.0)


@overload(sigmoid, inline="always", jit_options={"cache": True})
def _sigmoid_overload(x):
    one = _ONE if x == types.float32 else 1.0

    def implementation(x):  # pragma: no cover - compiled
        return one / (fast_exp(-x) + one)  # fast_exp clamps: no overflow

    return implementation


@numba.njit(inline="always")
def exp_into(x, out, count):  # pragma: no cover - compiled
    """``out[:count] = exp(x[:count])``."""
    for j in range(count):
        out[j] = fast_exp(x[j])

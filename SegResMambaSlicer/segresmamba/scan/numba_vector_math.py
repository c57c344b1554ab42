"""float32 vector arithmetic in LLVM IR, for the numba intrinsics of :mod:`.numba_simd` and
:mod:`.numba_simd_states`.

:class:`VectorMath` emits ``<16 x float>`` code: the exp, exp2, log1p, softplus, sigmoid and
silu of :mod:`.numba_math` (the same Cephes polynomials, clamps and bit tricks, so both kinds of
kernel compute the same decays), a sum across lanes, and loads and stores that may be masked to
the lanes that exist. :func:`row_address` and :func:`part_row_address` give the kernels the byte
addresses those intrinsics take.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils

from . import numba_math as m

LANES = 16
"""float32 lanes per vector: one AVX-512 register (LLVM splits it where registers are smaller)."""

_F32 = ir.FloatType()
_I32 = ir.IntType(32)
FLOAT_VECTOR = ir.VectorType(_F32, LANES)
INT_VECTOR = ir.VectorType(_I32, LANES)
_VB = ir.VectorType(ir.IntType(1), LANES)

_BIASED_ROUND = float(m._ROUND) + 127.0
"""Adding it rounds v (|v| <= 127) to the integer k and leaves k + 127 in the low bits of the
sum's mantissa; the bits above them shift out (1.5 * 2**23 + 127 is exact in float32)."""


class VectorMath:
    """Builds ``<16 x float>`` arithmetic at ``builder``'s position."""

    def __init__(self, builder: ir.IRBuilder, mask: ir.Value | None = None) -> None:
        self.builder = builder
        self.mask = mask
        module = builder.module
        self._fmuladd = cgutils.get_or_insert_function(
            module,
            ir.FunctionType(FLOAT_VECTOR, [FLOAT_VECTOR, FLOAT_VECTOR, FLOAT_VECTOR]),
            f"llvm.fmuladd.v{LANES}f32",
        )
        pointer = FLOAT_VECTOR.as_pointer()
        self._load = cgutils.get_or_insert_function(
            module,
            ir.FunctionType(FLOAT_VECTOR, [pointer, _I32, _VB, FLOAT_VECTOR]),
            f"llvm.masked.load.v{LANES}f32.p0v{LANES}f32",
        )
        self._store = cgutils.get_or_insert_function(
            module,
            ir.FunctionType(ir.VoidType(), [FLOAT_VECTOR, pointer, _I32, _VB]),
            f"llvm.masked.store.v{LANES}f32.p0v{LANES}f32",
        )

    @staticmethod
    def const(value: float) -> ir.Constant:
        return ir.Constant(FLOAT_VECTOR, [float(np.float32(value))] * LANES)

    @staticmethod
    def int_const(value: int) -> ir.Constant:
        return ir.Constant(INT_VECTOR, [int(value)] * LANES)

    def splat(self, scalar: ir.Value) -> ir.Value:
        undefined = ir.Constant(FLOAT_VECTOR, ir.Undefined)
        first = self.builder.insert_element(undefined, scalar, _I32(0))
        return self.builder.shuffle_vector(first, undefined, ir.Constant(INT_VECTOR, [0] * LANES))

    def fma(self, a: ir.Value, b: ir.Value, c: ir.Value) -> ir.Value:
        """a * b + c, one rounding where the machine has FMA (as ``contract`` allows)."""
        return self.builder.call(self._fmuladd, [a, b, c])

    def add(self, a, b):
        return self.builder.fadd(a, b)

    def sub(self, a, b):
        return self.builder.fsub(a, b)

    def mul(self, a, b):
        return self.builder.fmul(a, b)

    def max(self, a, b):
        """Python's max(a, b): a unless b > a."""
        return self.builder.select(self.builder.fcmp_ordered(">", b, a), b, a)

    def min(self, a, b):
        return self.builder.select(self.builder.fcmp_ordered("<", b, a), b, a)

    def bits(self, a):
        return self.builder.bitcast(a, INT_VECTOR)

    def from_bits(self, a):
        return self.builder.bitcast(a, FLOAT_VECTOR)

    def load(self, address: ir.Value) -> ir.Value:
        """16 floats from the byte address ``address`` (an integer); 0 in lanes off the mask."""
        pointer = self.builder.inttoptr(address, FLOAT_VECTOR.as_pointer())
        if self.mask is None:
            return self.builder.load(pointer, align=4)
        return self.builder.call(self._load, [pointer, _I32(4), self.mask, self.const(0.0)])

    def store(self, value: ir.Value, address: ir.Value) -> None:
        """Into the lanes on the mask only."""
        pointer = self.builder.inttoptr(address, FLOAT_VECTOR.as_pointer())
        if self.mask is None:
            self.builder.store(value, pointer, align=4)
        else:
            self.builder.call(self._store, [value, pointer, _I32(4), self.mask])

    def scalar(self, address: ir.Value) -> ir.Value:
        """The float at the byte address ``address``, in every lane."""
        return self.splat(self.builder.load(self.builder.inttoptr(address, _F32.as_pointer())))

    def power_of_two(self, rounded: ir.Value) -> ir.Value:
        """2**k from ``rounded`` = v + ROUND + 127 (see :data:`_BIASED_ROUND`): its low mantissa
        bits hold k + 127, the exponent field of 2**k, which one shift puts in place."""
        return self.from_bits(self.builder.shl(self.bits(rounded), self.int_const(23)))

    def exp2(self, x: ir.Value) -> ir.Value:
        """numba_math's exp2_32."""
        v = self.min(self.max(x, self.const(m._LOW2)), self.const(m._HIGH2))
        rounded = self.add(v, self.const(_BIASED_ROUND))
        r = self.sub(v, self.sub(rounded, self.const(_BIASED_ROUND)))
        p = self.const(m._EXP2_P[0])
        for c in m._EXP2_P[1:]:
            p = self.fma(p, r, self.const(c))
        p = self.fma(p, r, self.const(m._ONE))
        return self.mul(p, self.power_of_two(rounded))

    def exp(self, x: ir.Value) -> ir.Value:
        """numba_math's exp32."""
        v = self.min(self.max(x, self.const(m._LOW)), self.const(m._HIGH))
        rounded = self.fma(v, self.const(m._LOG2E), self.const(_BIASED_ROUND))
        k = self.sub(rounded, self.const(_BIASED_ROUND))
        r = self.fma(k, self.const(-m._LN2_HI), v)
        r = self.fma(k, self.const(-m._LN2_LO), r)
        p = self.const(m._EXP_P[0])
        for c in m._EXP_P[1:]:
            p = self.fma(p, r, self.const(c))
        p = self.fma(p, r, self.const(m._HALF))
        p = self.add(self.fma(p, self.mul(r, r), r), self.const(m._ONE))
        return self.mul(p, self.power_of_two(rounded))

    def log1p_small(self, a: ir.Value) -> ir.Value:
        """numba_math's log1p32, for 0 <= a <= 1."""
        b = self.builder
        u = self.add(self.const(m._ONE), a)
        bits = self.bits(u)
        exponent = b.sitofp(
            b.sub(b.lshr(bits, self.int_const(23)), self.int_const(127)), FLOAT_VECTOR
        )
        mantissa = b.or_(b.and_(bits, self.int_const(0x007FFFFF)), self.int_const(0x3F800000))
        mantissa = self.from_bits(mantissa)
        big = b.fcmp_ordered(">", mantissa, self.const(m._SQRT_TWO))
        mantissa = b.select(big, self.mul(mantissa, self.const(m._HALF)), mantissa)
        exponent = b.select(big, self.add(exponent, self.const(m._ONE)), exponent)
        f = self.sub(mantissa, self.const(m._ONE))
        z = self.mul(f, f)
        q = self.const(m._LOG_P[0])
        for c in m._LOG_P[1:]:
            q = self.fma(q, f, self.const(c))
        series = self.sub(self.mul(self.mul(f, z), q), self.mul(self.const(m._HALF), z))
        log_u = self.add(
            self.add(self.add(f, series), self.mul(exponent, self.const(m._LN2_LO))),
            self.mul(exponent, self.const(m._LN2_HI)),
        )
        rounded = self.sub(u, self.const(m._ONE))
        exact = b.fcmp_ordered("==", rounded, self.const(0.0))
        return b.select(exact, a, self.mul(log_u, b.fdiv(a, rounded)))

    def softplus(self, x: ir.Value) -> ir.Value:
        """max(x, 0) + log1p(exp(-|x|))."""
        magnitude = self.from_bits(self.builder.and_(self.bits(x), self.int_const(0x7FFFFFFF)))
        tail = self.log1p_small(self.exp(self.sub(self.const(0.0), magnitude)))
        return self.add(self.max(x, self.const(0.0)), tail)

    def sigmoid(self, x: ir.Value) -> ir.Value:
        """1 / (exp(-x) + 1), numba_math's sigmoid."""
        one = self.const(m._ONE)
        return self.builder.fdiv(one, self.add(self.exp(self.sub(self.const(0.0), x)), one))

    def total(self, x: ir.Value) -> ir.Value:
        """The sum of the 16 lanes, as a float (a tree of halving shuffles)."""
        width = LANES
        while width > 1:
            width //= 2
            upper = [width + i if i < width else i for i in range(LANES)]
            moved = self.builder.shuffle_vector(x, x, ir.Constant(INT_VECTOR, upper))
            x = self.add(x, moved)
        return self.builder.extract_element(x, _I32(0))

    def silu(self, x: ir.Value) -> ir.Value:
        """x * sigmoid(x)."""
        return self.mul(x, self.sigmoid(x))


def splat_int(builder: ir.IRBuilder, value: ir.Value) -> ir.Value:
    """An integer in every lane (at its own width)."""
    kind = ir.VectorType(value.type, LANES)
    undefined = ir.Constant(kind, ir.Undefined)
    first = builder.insert_element(undefined, value, _I32(0))
    return builder.shuffle_vector(first, undefined, ir.Constant(INT_VECTOR, [0] * LANES))


def vector_at(builder: ir.IRBuilder, base: ir.Value, offset: ir.Value) -> ir.Value:
    """A ``<16 x float>*`` to the byte address ``base + offset`` (integers)."""
    return builder.inttoptr(builder.add(base, offset), FLOAT_VECTOR.as_pointer())


def each_group(builder: ir.IRBuilder, channels: ir.Value, emit) -> None:
    """emit(group index, mask) for each 16-channel group of ``channels``: the whole groups with
    mask None (plain loads and stores), then a partly filled last one with the mask of its
    channels that exist."""
    intp = channels.type
    whole = builder.sdiv(channels, intp(LANES))
    rest = builder.sub(channels, builder.mul(whole, intp(LANES)))
    with cgutils.for_range(builder, whole) as group:
        emit(group.index, None)
    with builder.if_then(builder.icmp_signed(">", rest, intp(0))):
        lanes = builder.trunc(splat_int(builder, rest), INT_VECTOR)
        emit(whole, builder.icmp_signed("<", ir.Constant(INT_VECTOR, list(range(LANES))), lanes))


@numba.njit(inline="always")
def row_address(array, b, t):  # pragma: no cover - compiled
    """The byte address of ``array[b, t, 0]``: where vector code reads a token's row."""
    return array.ctypes.data + b * array.strides[0] + t * array.strides[1]


@numba.njit(inline="always")
def part_row_address(array, part, b, t):  # pragma: no cover - compiled
    """The byte address of ``array[part, b, t, 0]`` (a row of per-thread partial sums)."""
    strides = array.strides
    return array.ctypes.data + part * strides[0] + b * strides[1] + t * strides[2]

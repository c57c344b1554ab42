"""SiLU(causal depthwise conv1d) on token-major tensors, compiled with numba, for CPUs.

``nn.Conv1d`` wants channels-first data, so on ToM's token-major (batch, L, channels) tensors
every call transposes in and out: two full copies per direction, on top of the conv itself. This
kernel reads the tokens where they are (any strides: ToM passes a column slice of ``in_proj``'s
output) and writes the result token-major; the backward recomputes the pre-activation instead
of storing it. Same ``nn.Conv1d`` weights as every other path.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from numba import prange
from torch import nn

from .numba_math import KERNEL_OPTIONS, exp_into
from .numba_prefetch import PREFETCH_STEPS, prefetch_row
from .numba_scan import visit_rows, work_dtype
from .numba_simd import conv_token
from .numba_vector_math import row_address

TILE = 512
"""Tokens per parallel work item."""


@numba.njit(inline="always")
def _tile(item, tiles, length):  # pragma: no cover - compiled
    """Work item ``item`` of ``tiles`` per batch element: its batch element and step range."""
    start = (item % tiles) * TILE
    return item // tiles, start, min(length, start + TILE)


@numba.njit(inline="always")
def _pre_activation(x, weight_t, bias, order, b, i, acc):  # pragma: no cover - compiled
    """acc[c] = bias[c] + sum_k weight_t[k, c] * x[b, order[i - (K - 1) + k], c]: step i of the
    sequence that visits the rows in ``order`` (zero before its first step)."""
    width, channels = weight_t.shape
    for c in range(channels):
        acc[c] = bias[c]
    for k in range(width):
        source = i - (width - 1) + k
        if source >= 0:
            row = order[source]
            for c in range(channels):
                acc[c] += weight_t[k, c] * x[b, row, c]


@numba.njit(inline="always")
def _scratch(channels, dtype):  # pragma: no cover - compiled
    """One token's buffers for :func:`_pre_and_decay`: acc, e and neg."""
    return np.empty(channels, dtype), np.empty(channels, dtype), np.empty(channels, dtype)


@numba.njit(inline="always")
def _pre_and_decay(x, weight_t, bias, order, b, i, acc, e, neg):  # pragma: no cover - compiled
    """acc = the pre-activation of step i, e = exp(-acc): SiLU(acc) = acc / (1 + e)."""
    _pre_activation(x, weight_t, bias, order, b, i, acc)
    for c in range(acc.shape[0]):
        neg[c] = -acc[c]
    exp_into(neg, e, acc.shape[0])


@numba.njit(**KERNEL_OPTIONS)
def conv_silu_forward(x, weight_t, bias, order, out):  # pragma: no cover - compiled
    """out = SiLU(causal conv(x)) along the sequence that visits the rows in ``order``, written
    back to the rows; x (batch, L, d) any strides, weight_t (K, d), out contiguous."""
    batch, length, channels = x.shape
    tiles = (length + TILE - 1) // TILE
    for item in prange(batch * tiles):
        b, start, stop = _tile(item, tiles, length)
        acc, e, neg = _scratch(channels, out.dtype)
        for i in range(start, stop):
            if i + PREFETCH_STEPS < length:  # rows a row order visits are far apart
                prefetch_row(x, (b, order[i + PREFETCH_STEPS]), 0, channels)
                prefetch_row(out, (b, order[i + PREFETCH_STEPS]), 0, channels)
            _pre_and_decay(x, weight_t, bias, order, b, i, acc, e, neg)
            row = order[i]
            for c in range(channels):
                out[b, row, c] = acc[c] / (e[c] + 1)


@numba.njit(**KERNEL_OPTIONS)
def conv_silu_forward_groups(x, weight_t, bias, order, out):  # pragma: no cover - compiled
    """:func:`conv_silu_forward` for float32 with x's channels contiguous: each token is one
    vector-code step (:func:`.numba_simd.conv_token`) instead of a loop per tap."""
    batch, length, channels = x.shape
    width = weight_t.shape[0]
    tiles = (length + TILE - 1) // TILE
    for item in prange(batch * tiles):
        b, start, stop = _tile(item, tiles, length)
        zeros = np.zeros(channels, np.float32)  # the taps before the sequence starts
        taps = np.empty(width, np.int64)
        for i in range(start, stop):
            if i + PREFETCH_STEPS < length:
                prefetch_row(x, (b, order[i + PREFETCH_STEPS]), 0, channels)
                prefetch_row(out, (b, order[i + PREFETCH_STEPS]), 0, channels)
            for k in range(width):
                source = i - (width - 1) + k
                taps[k] = row_address(x, b, order[source]) if source >= 0 else zeros.ctypes.data
            conv_token(
                taps.ctypes.data,
                width,
                weight_t.ctypes.data,
                weight_t.strides[0],
                bias.ctypes.data,
                row_address(out, b, order[i]),
                channels,
            )


@numba.njit(**KERNEL_OPTIONS)
def conv_silu_backward(
    x, weight_t, bias, order, grad_out, grad_pre, grad_x, grad_w_parts, grad_b_parts
):  # pragma: no cover - compiled
    """Gradients of :func:`conv_silu_forward`. Pass 1 (per tile): grad_pre = grad_out *
    SiLU'(pre) and this tile's share of the weight and bias gradients, in its own slice of
    ``grad_w_parts`` (items, K, d) / ``grad_b_parts`` (items, d). Pass 2: grad_x[s] =
    sum_k weight_t[k] * grad_pre[s + K - 1 - k]. s indexes the steps of the sequence; grad_pre
    is kept in step order, x, grad_out and grad_x in row order."""
    batch, length, channels = x.shape
    width = weight_t.shape[0]
    tiles = (length + TILE - 1) // TILE
    for item in prange(batch * tiles):
        b, start, stop = _tile(item, tiles, length)
        acc, e, neg = _scratch(channels, grad_pre.dtype)
        for i in range(start, stop):
            if i + PREFETCH_STEPS < length:
                prefetch_row(x, (b, order[i + PREFETCH_STEPS]), 0, channels)
                prefetch_row(grad_out, (b, order[i + PREFETCH_STEPS]), 0, channels)
            _pre_and_decay(x, weight_t, bias, order, b, i, acc, e, neg)
            row = order[i]
            for c in range(channels):
                sig = 1 / (e[c] + 1)
                g = grad_out[b, row, c] * sig * (1 + acc[c] * (1 - sig))
                grad_pre[b, i, c] = g
                grad_b_parts[item, c] += g
            for k in range(width):
                source = i - (width - 1) + k
                if source >= 0:
                    source_row = order[source]
                    for c in range(channels):
                        grad_w_parts[item, k, c] += grad_pre[b, i, c] * x[b, source_row, c]
    for item in prange(batch * tiles):
        b, start, stop = _tile(item, tiles, length)
        for s in range(start, stop):
            if s + PREFETCH_STEPS < length:
                prefetch_row(grad_x, (b, order[s + PREFETCH_STEPS]), 0, channels)
            row = order[s]
            for c in range(channels):
                grad_x[b, row, c] = 0
            for k in range(width):
                target = s + (width - 1) - k
                if target < length:
                    for c in range(channels):
                        grad_x[b, row, c] += weight_t[k, c] * grad_pre[b, target, c]


def _operands(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    """The work dtype, and the conv's weight as (K, d) and bias as (d,) numpy arrays in it."""
    channels, width = weight.shape[0], weight.shape[-1]
    work = work_dtype(x)
    weight_t = weight.detach().to(work).reshape(channels, width).t().contiguous()
    bias_w = bias.detach().to(work) if bias is not None else torch.zeros(channels, dtype=work)
    return work, weight_t.numpy(), bias_w.numpy()


def _forward_into(x, weight, bias, order, out: torch.Tensor):
    """Run :func:`conv_silu_forward` into ``out`` (contiguous, the work dtype); returns the rows
    visited, as the backward needs them."""
    _, weight_t, bias_w = _operands(x, weight, bias)
    rows = visit_rows(order, x.shape[1])
    inputs = x.detach().to(out.dtype)
    kernel = conv_silu_forward
    if out.dtype == torch.float32 and inputs.stride(-1) == 1:
        kernel = conv_silu_forward_groups
    kernel(inputs.numpy(), weight_t, bias_w, rows, out.numpy())
    return rows


class _ConvSilu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, order):
        out = torch.empty(x.shape, dtype=work_dtype(x))
        ctx.rows = _forward_into(x, weight, bias, order, out)
        ctx.save_for_backward(x, weight, bias)
        return out.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, bias = ctx.saved_tensors
        channels, width = weight.shape[0], weight.shape[-1]
        batch, length, _ = x.shape
        work, weight_t, bias_w = _operands(x, weight, bias)
        items = batch * -(-length // TILE)
        grad_pre = torch.empty((batch, length, channels), dtype=work)
        grad_x = torch.empty((batch, length, channels), dtype=work)
        grad_w = torch.zeros((items, width, channels), dtype=work)
        grad_b = torch.zeros((items, channels), dtype=work)
        conv_silu_backward(
            x.to(work).numpy(),
            weight_t,
            bias_w,
            ctx.rows,
            grad_out.to(work).numpy(),
            grad_pre.numpy(),
            grad_x.numpy(),
            grad_w.numpy(),
            grad_b.numpy(),
        )
        grad_weight = grad_w.sum(0).t().reshape(weight.shape).to(weight.dtype)
        grad_bias = grad_b.sum(0).to(bias.dtype) if bias is not None else None
        return grad_x.to(x.dtype), grad_weight, grad_bias, None


def causal_conv_silu_numba(
    x: torch.Tensor,
    conv: nn.Conv1d,
    order: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """SiLU(causal depthwise conv1d(x)) for token-major (batch, L, channels) CPU tensors, along
    the sequence that visits the rows in ``order`` (None: 0..L-1); the result is in row order.
    ``out``, for inference only (the caller checks): the kernel writes into it, and it is
    returned."""
    if out is None:
        return _ConvSilu.apply(x, conv.weight, conv.bias, order)
    if out.dtype != work_dtype(x) or not out.is_contiguous():
        return out.copy_(_ConvSilu.apply(x, conv.weight, conv.bias, order))
    _forward_into(x, conv.weight, conv.bias, order, out)
    return out

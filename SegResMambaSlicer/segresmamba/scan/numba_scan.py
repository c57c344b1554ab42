"""The fused CPU selective scan: numba kernels for the forward and the backward pass.

The portable torch scan needs many full passes over (tokens x channels x state) tensors because
PyTorch cannot fuse a recurrence. Here one compiled loop per pass does everything
(:mod:`.numba_kernels`): the step softplus(delta + bias) and the decays ``exp(step * A)`` are
computed inline, the state lives in a
small per-thread array, and the forward keeps only one state every ``CHUNK`` tokens. The backward
recomputes each chunk's states from that checkpoint and runs the adjoint recurrence in reverse
time, giving every gradient itself; autograd never sees the per-token states.

numba ships wheels for Windows, macOS and Linux and needs no compiler at run time; when it is
not installed the torch scan runs instead (``SEGRESMAMBA_SCAN`` forces either).
"""

from __future__ import annotations

import importlib.util

import torch

AVAILABLE = importlib.util.find_spec("numba") is not None

CHUNK = 128
"""Tokens between state checkpoints; the backward buffers one chunk's states and decays
(2 x CHUNK x d_state x block width per thread: 768 KiB in float32 at width 48)."""

ALIGN = 16
"""Block widths are multiples of 16 channels: one AVX-512 vector (two AVX2 ones) of float32."""

MAX_WIDTH = 128
"""Widest block: keeps the backward's chunk buffers within about 2 MB per thread."""


def block_width(channels: int, batch: int, threads: int, widest: int = MAX_WIDTH) -> int:
    """Channels per work item: as wide as possible while every thread gets work.

    The kernels' loops run over a block's channels, and long loops are fast ones, so the
    channels of each batch element are split into only as many blocks as the threads need
    (d = 96 on two threads: two blocks of 48 at batch 1, one of 96 at batch 2). ``widest``
    caps it for the scalar kernels' buffers; the float32 forward takes any width, so that a
    block per thread stays possible (d = 384 on two threads: two blocks of 192, not three of
    128, two on one thread and one on the other).
    """
    parts = max(1, -(-threads // max(1, batch)))
    width = -(-channels // parts)
    width = -(-width // ALIGN) * ALIGN
    return max(ALIGN, min(widest, width))


def _kernels():
    from . import numba_kernels

    return numba_kernels


def _backward_kernel():
    from .numba_backward import scan_backward

    return scan_backward


def _set_threads() -> int:
    """numba uses as many threads as torch (never more than numba was started with)."""
    import numba

    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(threads)
    return threads


def work_dtype(t: torch.Tensor) -> torch.dtype:
    """The kernels' dtype for ``t``: float64 stays float64 (gradcheck), all else runs float32."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def prefaulted(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A new (batch, L, d) tensor whose pages torch's threads have already touched, each its
    own part (torch.zeros). The kernels' threads each write a block of channels of every row,
    so on fresh memory they would fault the same pages in turn, one waiting for the other: at
    L = 110,592 the forward scan takes 0.085 s with a plain empty output, 0.080 s with this."""
    return torch.zeros(shape, dtype=dtype)


def _array(
    t: torch.Tensor | None,
    work: torch.dtype,
    like_shape: tuple[int, ...],
    any_row_stride: bool = False,
):
    """A contiguous numpy view in the work dtype, or a one-element stand-in when ``t`` is None.

    ``any_row_stride`` keeps a tensor whose last axis alone is contiguous: ToM's dt, B and C are
    column slices of one x_proj output, which the kernels read element by element, so copying
    them out first (three copies per direction) would buy nothing."""
    if t is None:
        return torch.zeros(like_shape, dtype=work).numpy()
    t = t.detach().to(work)
    return (t if any_row_stride and t.stride(-1) == 1 else t.contiguous()).numpy()


def _projection(delta_proj: torch.Tensor | None, work: torch.dtype):
    """dt_proj's weight (d, r) transposed to (r, d), so a block of channels is contiguous."""
    if delta_proj is None:
        return torch.zeros((1, 1), dtype=work).numpy()
    return delta_proj.detach().to(work).t().contiguous().numpy()


def _operands(u, delta, A, B, C, D, z, delta_bias, delta_proj, work: torch.dtype) -> tuple:
    """The kernels' inputs, in their order, as numpy arrays in the work dtype: delta, bias,
    projection, u, A transposed per batch element (batch, n, d), B, C, D, z. The forward and the
    backward pass the same ones."""
    batch, _, d = u.shape
    A_t = A.detach().to(work).expand(batch, d, A.shape[-1]).transpose(1, 2).contiguous()
    return (
        _array(delta, work, (1, 1, 1), any_row_stride=delta_proj is not None),
        _array(delta_bias, work, (1,)),
        _projection(delta_proj, work),
        _array(u, work, (1, 1, 1)),
        A_t.numpy(),
        _array(B, work, (1, 1, 1), any_row_stride=True),
        _array(C, work, (1, 1, 1), any_row_stride=True),
        _array(D, work, (1,)),
        _array(z, work, (1, 1, 1)),
    )


def visit_rows(order: torch.Tensor | None, length: int):
    """The rows the sequence visits, as an int64 numpy array (0..L-1 when ``order`` is None)."""
    if order is None:
        return torch.arange(length, dtype=torch.int64).numpy()
    if order.shape != (length,):
        raise ValueError(
            f"order must have one entry per token ({length}), got {tuple(order.shape)}"
        )
    return order.to(torch.int64).contiguous().numpy()


def _run_forward(
    operands: tuple,
    rows,
    y: torch.Tensor,
    flags: tuple[bool, bool, bool, bool, bool],
    save: bool,
    accumulate: bool,
) -> torch.Tensor:
    """Run the forward kernel into ``y`` (batch, L, d), adding to it when ``accumulate``;
    returns the checkpoints (batch, chunks, n, d), one stand-in chunk unless ``save``.
    ``flags``: has delta_bias, has delta_proj, softplus, has D, has z."""
    threads = _set_threads()
    batch, length, d = y.shape
    n = operands[4].shape[1]  # A_t (batch, n, d)
    chunks = -(-length // CHUNK) if save else 1
    checkpoints = torch.empty((batch, chunks, n, d), dtype=y.dtype)
    kernel, widest = _kernels().scan_forward, MAX_WIDTH
    if y.dtype == torch.float32:
        from .numba_simd import scan_forward_groups as kernel

        widest = d
    kernel(
        *operands,
        rows,
        y.numpy(),
        checkpoints.numpy(),
        *flags,
        save,
        accumulate,
        CHUNK,
        block_width(d, batch, threads, widest),
    )
    return checkpoints


def _flags(delta_bias, delta_proj, delta_softplus: bool, D, z) -> tuple[bool, ...]:
    return (
        delta_bias is not None,
        delta_proj is not None,
        delta_softplus,
        D is not None,
        z is not None,
    )


class _FusedScan(torch.autograd.Function):
    """The scan on token-major tensors: u, delta, z (batch, L, d); B, C (batch, L, n)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, order, delta_proj):
        batch, length, d = u.shape
        rows = visit_rows(order, length)
        work = work_dtype(u)
        save = any(ctx.needs_input_grad)
        y = prefaulted((batch, length, d), work)
        checkpoints = _run_forward(
            _operands(u, delta, A, B, C, D, z, delta_bias, delta_proj, work),
            rows,
            y,
            _flags(delta_bias, delta_proj, delta_softplus, D, z),
            save,
            accumulate=False,
        )
        ctx.delta_softplus = delta_softplus
        ctx.rows = rows
        ctx.A_batched = A.dim() == 3
        if save:
            ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, delta_proj, checkpoints)
        return y.to(u.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        threads = _set_threads()
        u, delta, A, B, C, D, z, delta_bias, delta_proj, checkpoints = ctx.saved_tensors
        batch, length, d = u.shape
        n = A.shape[-1]
        work = checkpoints.dtype
        width = block_width(d, batch, threads)
        blocks = -(-d // width)
        groups = max(1, min(blocks, threads))
        new = dict(dtype=work)
        grad_u = prefaulted((batch, length, d), work)
        projected = delta_proj is not None
        rank = delta.shape[-1]
        grad_delta = prefaulted((1, 1, 1) if projected else (batch, length, d), work)
        grad_low = torch.zeros((groups, batch, length, rank) if projected else (1, 1, 1, 1), **new)
        grad_proj_t = torch.empty((batch, rank, d) if projected else (1, 1, 1), **new)
        grad_z = prefaulted((batch, length, d) if z is not None else (1, 1, 1), work)
        grad_A_t = torch.empty((batch, n, d), **new)
        grad_D = torch.empty((batch, d), **new)
        grad_bias = torch.empty((batch, d), **new)
        grad_B = torch.zeros((groups, batch, length, n), **new)
        grad_C = torch.zeros((groups, batch, length, n), **new)
        _backward_kernel()(
            *_operands(u, delta, A, B, C, D, z, delta_bias, delta_proj, work),
            ctx.rows,
            _array(grad_out, work, (1, 1, 1)),
            checkpoints.numpy(),
            delta_bias is not None,
            projected,
            ctx.delta_softplus,
            D is not None,
            z is not None,
            CHUNK,
            groups,
            width,
            grad_u.numpy(),
            grad_delta.numpy(),
            grad_z.numpy(),
            grad_A_t.numpy(),
            grad_D.numpy(),
            grad_bias.numpy(),
            grad_proj_t.numpy(),
            grad_B.numpy(),
            grad_C.numpy(),
            grad_low.numpy(),
        )
        grad_A = grad_A_t.transpose(1, 2)
        if not ctx.A_batched:
            grad_A = grad_A.sum(0)
        grad_bias = grad_bias.sum(0) if delta_bias is not None else None
        if projected:
            grad_delta = grad_low.sum(0)
        return (
            grad_u.to(u.dtype),
            grad_delta.to(delta.dtype),
            grad_A.to(A.dtype),
            grad_B.sum(0).to(B.dtype),
            grad_C.sum(0).to(C.dtype),
            grad_D.sum(0).to(D.dtype) if D is not None else None,
            grad_z.to(z.dtype) if z is not None else None,
            grad_bias.to(delta_bias.dtype) if delta_bias is not None else None,
            None,
            None,
            grad_proj_t.sum(0).t().to(delta_proj.dtype) if projected else None,
        )


def selective_scan_tokens_numba(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    order: torch.Tensor | None = None,
    delta_proj: torch.Tensor | None = None,
    add_to: torch.Tensor | None = None,
) -> torch.Tensor:
    """The fused scan on token-major CPU tensors: u, delta, z (batch, L, d); B, C (batch, L, n);
    A (d, n) or (batch, d, n); D, delta_bias (d,). Returns (batch, L, d) in u's dtype.

    ``order`` (L,) lists the rows in the order the sequence visits them (None: 0..L-1); every
    tensor, the output too, stays in its row layout. ``delta_proj`` (d, r): delta is then the
    low-rank (batch, L, r) input, and the kernels apply this projection (mamba-ssm's
    ``dt_proj.weight``) token by token. ``add_to`` (batch, L, d), for inference only (the caller
    checks): the kernel adds the result into it, and it is returned."""
    if add_to is None:
        return _FusedScan.apply(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, order, delta_proj
        )
    work = work_dtype(u)
    if add_to.dtype != work or not add_to.is_contiguous():
        return add_to.add_(
            _FusedScan.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, order, delta_proj)
        )
    _run_forward(
        _operands(u, delta, A, B, C, D, z, delta_bias, delta_proj, work),
        visit_rows(order, u.shape[1]),
        add_to,
        _flags(delta_bias, delta_proj, delta_softplus, D, z),
        save=False,
        accumulate=True,
    )
    return add_to


def selective_scan_numba(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
) -> torch.Tensor:
    """The fused scan with mamba-ssm's shapes (batch, d, L) / (batch, n, L)."""

    def tokens(t):
        return t.transpose(1, 2) if t is not None else None

    out = selective_scan_tokens_numba(
        tokens(u), tokens(delta), A, tokens(B), tokens(C), D, tokens(z), delta_bias, delta_softplus
    )
    return out.transpose(1, 2).contiguous()

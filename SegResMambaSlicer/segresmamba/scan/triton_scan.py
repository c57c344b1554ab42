"""The ``triton`` selective-scan backend: a GPU kernel that needs no compiler toolchain.

PyTorch's CUDA wheels ship Triton, so this backend runs on any NVIDIA GPU where PyTorch does,
unlike mamba-ssm's kernel, which has to be built against the local CUDA toolkit. Semantics are
mamba-ssm's ``selective_scan_fn`` (z, D, delta_bias, delta_softplus) and it reads the same
parameters as every other backend. The kernels themselves are in :mod:`.triton_kernels`, imported
on first use only, so a CPU run never pays for importing Triton. With ``TRITON_INTERPRET=1`` the
same kernels run on CPU tensors in Triton's interpreter, which is how CI checks them.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os

import torch

AVAILABLE = importlib.util.find_spec("triton") is not None
"""Triton is installed (it may still be unable to compile for this machine's device)."""

BLOCK_L = 32
"""Tokens per block: the state entering each block is the checkpoint the backward restarts from."""

BLOCK_D_FORWARD = 16
BLOCK_D_BACKWARD = 8
"""Channels per program; the backward holds more (BLOCK_L, BLOCK_D, n) tiles, so fewer."""


def interpreting() -> bool:
    """Triton's interpreter is on: kernels run on CPU tensors (slowly), for testing."""
    return os.environ.get("TRITON_INTERPRET", "") == "1"


def _kernels():
    return importlib.import_module(".triton_kernels", __package__)


def _launch_args(u, delta, A, B, C, z):
    """Strides of every operand; A of shape (d, n) gets batch stride 0, absent z repeats u."""
    a_strides = A.stride() if A.dim() == 3 else (0, *A.stride())
    z_strides = z.stride() if z is not None else u.stride()
    return (
        *u.stride(), *delta.stride(), *a_strides, *B.stride(), *C.stride(), *z_strides,
    )  # fmt: skip


def _block_n(n: int) -> int:
    return max(2, 1 << (n - 1).bit_length())


class _SelectiveScanTriton(torch.autograd.Function):
    """Channel-first views (batch, d, L) of any strides: token-major storage needs no copies."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        batch, d, length = u.shape
        n = A.shape[-1]
        kernels = _kernels()
        out = torch.empty_like(u)  # keeps u's layout: token-major in, token-major out
        n_blocks = -(-length // BLOCK_L)
        ckpt = torch.empty((batch, n_blocks, d, n), dtype=torch.float32, device=u.device)
        grid = (batch, -(-d // BLOCK_D_FORWARD))
        dummy = u  # stands in for absent D, z, bias; never read
        with _on_device(u):
            kernels.selective_scan_fwd_kernel[grid](
                u, delta, A, B, C,
                D if D is not None else dummy, z if z is not None else dummy,
                delta_bias if delta_bias is not None else dummy, out, ckpt,
                length, d, n, *_launch_args(u, delta, A, B, C, z), *out.stride(),
                HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
                SOFTPLUS=bool(delta_softplus), BLOCK_L=BLOCK_L, BLOCK_D=BLOCK_D_FORWARD,
                BLOCK_N=_block_n(n),
            )  # fmt: skip
        ctx.delta_softplus = bool(delta_softplus)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, ckpt)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        u, delta, A, B, C, D, z, delta_bias, ckpt = ctx.saved_tensors
        batch, d, length = u.shape
        n = A.shape[-1]
        kernels = _kernels()
        new = dict(dtype=torch.float32, device=u.device)
        grad_u = torch.empty((batch, length, d), **new)
        grad_delta = torch.empty((batch, length, d), **new)
        grad_z = torch.empty((batch, length, d), **new) if z is not None else grad_u
        d_blocks = -(-d // BLOCK_D_BACKWARD)
        grad_B = torch.empty((batch, d_blocks, length, n), **new)
        grad_C = torch.empty((batch, d_blocks, length, n), **new)
        grad_A = torch.empty((batch, d, n), **new)
        grad_D = torch.empty((batch, d), **new)
        dummy = u
        with _on_device(u):
            kernels.selective_scan_bwd_kernel[(batch, d_blocks)](
                u, delta, A, B, C,
                D if D is not None else dummy, z if z is not None else dummy,
                delta_bias if delta_bias is not None else dummy, ckpt, grad_out,
                grad_u, grad_delta, grad_z, grad_B, grad_C, grad_A, grad_D,
                length, d, n, *_launch_args(u, delta, A, B, C, z), *grad_out.stride(),
                HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
                SOFTPLUS=ctx.delta_softplus, BLOCK_L=BLOCK_L, BLOCK_D=BLOCK_D_BACKWARD,
                BLOCK_N=_block_n(n),
            )  # fmt: skip

        def channels_first(t, like):
            return t.transpose(1, 2).to(like.dtype)

        grad_A = grad_A if A.dim() == 3 else grad_A.sum(0)
        return (
            channels_first(grad_u, u),
            channels_first(grad_delta, delta),
            grad_A.to(A.dtype),
            channels_first(grad_B.sum(1), B),
            channels_first(grad_C.sum(1), C),
            grad_D.sum(0).to(D.dtype) if D is not None else None,
            channels_first(grad_z, z) if z is not None else None,
            grad_delta.sum((0, 1)).to(delta_bias.dtype) if delta_bias is not None else None,
            None,
        )


def _on_device(t: torch.Tensor):
    """Launch on t's GPU (Triton launches on the current device), or nothing on the CPU."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def selective_scan_triton(
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
    """The triton backend with mamba-ssm's shapes: u, delta, z (batch, d, L); B, C (batch, n, L);
    A (d, n) or (batch, d, n). Views of any strides are read in place; the output has u's layout
    and dtype (the kernels compute in float32)."""
    return _SelectiveScanTriton.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus)


def selective_scan_tokens_triton(
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
    """The triton backend on token-major tensors (batch, L, channels), as ToM produces them."""

    def channels_first(t: torch.Tensor | None) -> torch.Tensor | None:
        return t.transpose(1, 2) if t is not None else None

    out = selective_scan_triton(
        channels_first(u), channels_first(delta), A, channels_first(B), channels_first(C),
        D, channels_first(z), delta_bias, delta_softplus,
    )  # fmt: skip
    return out.transpose(1, 2)

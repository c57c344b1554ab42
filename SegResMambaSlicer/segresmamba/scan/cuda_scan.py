"""mamba-ssm's compiled selective-scan kernel, wrapped so it has the same signature as ours.

Only the compiled extension ``selective_scan_cuda`` is imported: ``import mamba_ssm`` would pull in
triton and transformers, which a segmentation run does not need.
"""

from __future__ import annotations

import importlib

import torch


def load_kernel():
    """The compiled module, or None when mamba-ssm's CUDA extension is not installed."""
    try:
        return importlib.import_module("selective_scan_cuda")
    except (ImportError, OSError):
        return None


class _SelectiveScanCuda(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kernel, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        u, delta, B, C = (t.contiguous() for t in (u, delta, B, C))
        z = z.contiguous() if z is not None else None
        # The kernel takes B and C grouped as (batch, groups, n, L).
        out, states, *rest = kernel.fwd(
            u, delta, A, B[:, None], C[:, None], D, z, delta_bias, delta_softplus
        )
        ctx.kernel = kernel
        ctx.delta_softplus = delta_softplus
        ctx.has_z = z is not None
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, states, out)
        return rest[0] if z is not None else out

    @staticmethod
    def backward(ctx, grad_out):
        u, delta, A, B, C, D, z, delta_bias, states, out = ctx.saved_tensors
        grads = ctx.kernel.bwd(
            u,
            delta,
            A,
            B[:, None],
            C[:, None],
            D,
            z,
            delta_bias,
            grad_out.contiguous(),
            states,
            out,
            None,
            ctx.delta_softplus,
            False,
        )
        du, ddelta, dA, dB, dC, dD, dbias = grads[:7]
        dz = grads[7] if ctx.has_z else None
        return (
            None,
            du,
            ddelta,
            dA,
            dB[:, 0],
            dC[:, 0],
            dD if D is not None else None,
            dz,
            dbias if delta_bias is not None else None,
            None,
        )


def selective_scan_cuda(
    kernel, u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False
) -> torch.Tensor:
    """Run mamba-ssm's kernel; A must be (d, n) as the kernel expects."""
    if A.dim() != 2:
        raise ValueError("the cuda backend takes A as (d, n); call it once per set of A")
    return _SelectiveScanCuda.apply(kernel, u, delta, A, B, C, D, z, delta_bias, delta_softplus)

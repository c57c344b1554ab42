"""Per-token reference scan: the selective-scan math written as plainly as possible.

It is slow (one Python step per token) and exists to check the fast backends, in float64, and to
give the benchmark its baseline.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def selective_scan_reference(
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
    """Mamba's selective scan, one token at a time, differentiable through autograd.

    Shapes as mamba-ssm's ``selective_scan_fn``: u, delta, z (batch, d, L); A (d, n) or
    (batch, d, n); B, C (batch, n, L); D and delta_bias (d,). Computes in the wider of float32 and
    the input dtype, and returns the input dtype.
    """
    dtype_in = u.dtype
    work = torch.float64 if dtype_in == torch.float64 else torch.float32
    u, delta, A, B, C = (t.to(work) for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.to(work)[None, :, None]
    if delta_softplus:
        delta = F.softplus(delta)
    batch, d, length = u.shape
    A_full = A.expand(batch, d, A.shape[-1]) if A.dim() == 2 else A
    state = u.new_zeros(batch, d, A.shape[-1])
    outputs = []
    for t in range(length):
        decay = torch.exp(delta[:, :, t, None] * A_full)
        state = decay * state + (delta[:, :, t] * u[:, :, t])[:, :, None] * B[:, None, :, t]
        outputs.append(torch.einsum("bdn,bn->bd", state, C[:, :, t]))
    y = torch.stack(outputs, dim=-1)
    if D is not None:
        y = y + D.to(work)[None, :, None] * u
    if z is not None:
        y = y * F.silu(z.to(work))
    return y.to(dtype_in)

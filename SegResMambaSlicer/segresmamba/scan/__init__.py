"""The selective scan at the heart of Mamba, with interchangeable backends.

``"cuda"`` is mamba-ssm's compiled kernel (Linux with an NVIDIA GPU, optional extra);
``"torch"`` is our portable chunked scan, which runs wherever PyTorch does; ``"numba"`` is the
fused CPU scan compiled by numba, forward and backward (:mod:`.numba_scan`); ``"triton"`` is our
Triton GPU kernel, which needs no compiler (Triton ships with PyTorch's CUDA wheels). All read the
same parameters, so one checkpoint serves every machine.
"""

from __future__ import annotations

import logging
import os

import torch
import torch.nn.functional as F

from . import numba_scan, triton_scan
from .causal_conv import refuse_while_recording, resolve_conv_backend
from .cuda_scan import load_kernel, selective_scan_cuda
from .reference import selective_scan_reference
from .torch_scan import selective_scan_tokens_torch, selective_scan_torch
from .triton_scan import selective_scan_triton

__all__ = [
    "BACKENDS",
    "BACKEND_DESCRIPTIONS",
    "describe_backend",
    "reads_rows_in_order",
    "resolve_backend",
    "resolve_conv_backend",
    "selective_scan",
    "selective_scan_reference",
    "selective_scan_tokens",
]

BACKENDS = ("torch", "numba", "cuda", "triton")
ENV_VAR = "SEGRESMAMBA_SCAN"
BACKEND_DESCRIPTIONS = {
    "torch": "portable PyTorch scan",
    "numba": "numba-compiled CPU scan",
    "cuda": "mamba-ssm CUDA kernel",
    "triton": "Triton GPU kernel",
}
"""What each backend is, in words for users (the Slicer device line); one entry per backend."""

_log = logging.getLogger("segresmamba")
_announced: set[str] = set()
_kernel = None
_kernel_checked = False


def _cuda_kernel():
    global _kernel, _kernel_checked
    if not _kernel_checked:
        _kernel, _kernel_checked = load_kernel(), True
    return _kernel


def resolve_backend(backend: str | None = None, device: torch.device | str | None = None) -> str:
    """The backend a scan on ``device`` will use.

    An explicit ``backend`` wins, then ``SEGRESMAMBA_SCAN``, then the best available: ``cuda``
    when mamba-ssm's kernel imports and the data is on a CUDA device, else ``triton`` on CUDA when
    Triton is installed, ``numba`` for CPU data when numba is installed, else ``torch``. Triton
    runs on CPU tensors only in its interpreter (``TRITON_INTERPRET=1``, for tests).
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    requested = backend or os.environ.get(ENV_VAR, "").strip().lower() or None
    if requested is not None and requested not in BACKENDS:
        raise ValueError(
            f"unknown selective-scan backend {requested!r} (from "
            f"{'the backend argument' if backend else ENV_VAR}); choose one of {', '.join(BACKENDS)}"
        )
    if requested == "cuda":
        if _cuda_kernel() is None:
            raise RuntimeError(
                "the cuda scan backend needs mamba-ssm's compiled kernel (pip install .[cuda]); "
                f"it did not import. Use {ENV_VAR}=torch for the portable scan."
            )
        if device.type != "cuda":
            raise RuntimeError(f"the cuda scan backend needs CUDA tensors, got {device.type}")
        chosen = "cuda"
    elif requested == "numba":
        if not numba_scan.AVAILABLE:
            raise RuntimeError(
                f"the numba scan backend needs numba (pip install numba); use {ENV_VAR}=torch"
            )
        if device.type != "cpu":
            raise RuntimeError(f"the numba scan backend runs on the CPU, got {device.type}")
        chosen = "numba"
    elif requested == "triton":
        if not triton_scan.AVAILABLE:
            raise RuntimeError(
                "the triton scan backend needs triton (it ships with PyTorch's CUDA wheels; "
                f"pip install triton); use {ENV_VAR}=torch"
            )
        if device.type != "cuda" and not triton_scan.interpreting():
            raise RuntimeError(
                f"the triton scan backend needs CUDA tensors, got {device.type} "
                "(TRITON_INTERPRET=1 runs it on the CPU, slowly, for tests)"
            )
        chosen = "triton"
    elif requested == "torch":
        chosen = "torch"
    elif device.type == "cuda" and _cuda_kernel() is not None:
        chosen = "cuda"
    elif device.type == "cuda" and triton_scan.AVAILABLE:
        chosen = "triton"
    else:
        chosen = "numba" if device.type == "cpu" and numba_scan.AVAILABLE else "torch"
    if chosen not in _announced:
        _announced.add(chosen)
        _log.info("selective scan backend: %s (on %s)", chosen, device.type)
    return chosen


def reads_rows_in_order(device: torch.device | str, scan_backend: str | None = None) -> bool:
    """Whether a Mamba direction's conv and scan both run as numba kernels here: they follow an
    ``order`` of the rows where the rows lie, so a reordered direction needs no reordered copies
    (the other backends would get copies made for them, more than reordering once up front)."""
    return (
        resolve_conv_backend(device, scan_backend) == "numba"
        and resolve_backend(scan_backend, device) == "numba"
    )


def describe_backend(backend: str) -> str:
    """The user-facing words for a backend name that :func:`resolve_backend` returned."""
    return BACKEND_DESCRIPTIONS.get(backend, f"{backend} scan")


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    backend: str | None = None,
) -> torch.Tensor:
    """Mamba's selective scan with mamba-ssm's ``selective_scan_fn`` shapes.

    Args:
        u: input sequence, (batch, d, L).
        delta: step sizes before the optional bias and softplus, (batch, d, L).
        A: state decay rates (negative), (d, n); the torch backend also takes (batch, d, n), which
            lets several directions with their own A share one call.
        B: input-to-state projections, (batch, n, L).
        C: state-to-output projections, (batch, n, L).
        D: skip weights, (d,).
        z: gate, (batch, d, L); the output is multiplied by SiLU(z).
        delta_bias: added to delta, (d,).
        delta_softplus: apply softplus to delta (+ bias), as Mamba does.
        backend: ``"torch"``, ``"numba"``, ``"cuda"``, ``"triton"`` or None for the best available.

    Returns:
        (batch, d, L) in u's dtype.
    """
    _check_shapes(u, delta, A, B, C, D, z, delta_bias)
    chosen = resolve_backend(backend, u.device)
    if chosen == "cuda":
        return selective_scan_cuda(
            _cuda_kernel(), u, delta, A, B, C, D, z, delta_bias, delta_softplus
        )
    if chosen == "triton":
        return selective_scan_triton(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    if chosen == "numba":
        return numba_scan.selective_scan_numba(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return selective_scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus)


def _check_shapes(u, delta, A, B, C, D, z, delta_bias) -> None:
    if u.dim() != 3:
        raise ValueError(f"u must be (batch, d, L), got shape {tuple(u.shape)}")
    batch, d, length = u.shape
    n = A.shape[-1]
    expected = {
        "delta": (delta, (batch, d, length)),
        "A": (A, (d, n) if A.dim() == 2 else (batch, d, n)),
        "B": (B, (batch, n, length)),
        "C": (C, (batch, n, length)),
        "D": (D, (d,)),
        "z": (z, (batch, d, length)),
        "delta_bias": (delta_bias, (d,)),
    }
    for name, (tensor, shape) in expected.items():
        if tensor is not None and tuple(tensor.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(tensor.shape)}")


def _check_add_to(add_to: torch.Tensor, u: torch.Tensor, inputs: tuple) -> None:
    if tuple(add_to.shape) != tuple(u.shape):
        raise ValueError(f"add_to must have u's shape {tuple(u.shape)}, got {tuple(add_to.shape)}")
    refuse_while_recording("add_to", inputs)


def selective_scan_tokens(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    backend: str | None = None,
    order: torch.Tensor | None = None,
    delta_proj: torch.Tensor | None = None,
    add_to: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`selective_scan` on token-major tensors, the layout ``nn.Linear`` produces.

    u, delta, z: (batch, L, d); B, C: (batch, L, n); A, D, delta_bias as in
    :func:`selective_scan`. Returns (batch, L, d). The torch backend works in this layout
    natively; the cuda backend gets transposed copies.

    ``order`` (L,), a permutation of the rows: the sequence visits row ``order[i]`` at step i,
    and the result stays in the rows' layout. The numba scan reads the rows where they are; the
    other backends get reordered copies (see :func:`reads_rows_in_order`).

    ``delta_proj`` (d, r), mamba-ssm's ``dt_proj.weight``: delta is then the low-rank
    (batch, L, r) input and the step is computed from ``delta @ delta_proj.T``. The numba scan
    applies it token by token inside its kernels (the tokens x channels product is never stored);
    the other backends get the product.

    ``add_to`` (batch, L, d): the result is added into this tensor in place, and it is returned.
    ToM sums its three directions so in inference: the numba kernel adds as it writes, so no
    direction gets an output of its own and no separate sum is run. Refused while autograd
    records (the sum would hide each direction's output from it).
    """

    def channels_first(t: torch.Tensor | None) -> torch.Tensor | None:
        return t.transpose(1, 2) if t is not None else None

    chosen = resolve_backend(backend, u.device)
    if delta_proj is not None:
        if delta_proj.dim() != 2 or delta.shape[-1] != delta_proj.shape[1]:
            raise ValueError(
                f"delta_proj must be (d, r) for a (batch, L, r) delta: got {tuple(delta_proj.shape)}"
                f" for delta {tuple(delta.shape)}"
            )
        if delta_proj.shape[0] != u.shape[-1]:
            raise ValueError(
                f"delta_proj has {delta_proj.shape[0]} rows for {u.shape[-1]} channels"
            )
        if chosen != "numba":
            delta, delta_proj = F.linear(delta, delta_proj), None

    _check_shapes(
        *(channels_first(t) for t in (u, delta if delta_proj is None else u)),
        A,
        *(channels_first(t) for t in (B, C)),
        D,
        channels_first(z),
        delta_bias,
    )
    if add_to is not None:
        _check_add_to(add_to, u, (u, delta, A, B, C, D, z, delta_bias, delta_proj))
    if chosen == "numba":
        return numba_scan.selective_scan_tokens_numba(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, order, delta_proj, add_to
        )
    if add_to is not None:
        y = selective_scan_tokens(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, chosen, order, delta_proj
        )
        return add_to.add_(y)
    if order is not None:
        visit = [t.index_select(1, order) if t is not None else None for t in (u, delta, B, C, z)]
        u_o, delta_o, B_o, C_o, z_o = visit
        y = selective_scan_tokens(
            u_o, delta_o, A, B_o, C_o, D, z_o, delta_bias, delta_softplus, chosen
        )
        return y.index_select(1, torch.argsort(order))  # back to the rows' layout
    if chosen == "triton":
        return triton_scan.selective_scan_tokens_triton(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus
        )
    if chosen == "cuda":
        args = [
            t.contiguous() if t is not None else None
            for t in (
                channels_first(u),
                channels_first(delta),
                A,
                channels_first(B),
                channels_first(C),
                D,
                channels_first(z),
                delta_bias,
            )
        ]
        return selective_scan_cuda(_cuda_kernel(), *args, delta_softplus).transpose(1, 2)
    return selective_scan_tokens_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus)

"""The depthwise causal conv1d of every Mamba direction: causal-conv1d's CUDA kernel when that
package is installed and the data is on a GPU, our numba kernel on CPUs where the numba scan
runs, else ``nn.Conv1d`` with left padding.

All read the same ``nn.Conv1d`` weights (causal-conv1d takes them as (channels, width)), so one
checkpoint serves any. The choice follows the scan's: forcing the portable scan
(``SEGRESMAMBA_SCAN=torch`` or ``numba``) forces the matching conv too.
"""

from __future__ import annotations

import importlib
import os

import torch
import torch.nn.functional as F
from torch import nn

from . import numba_scan

CONV_BACKENDS = ("causal-conv1d", "numba", "torch")
PORTABLE_SCANS = ("torch", "numba")
"""Scan backends that, when forced, force the nn.Conv1d path as well."""

_kernel = None
_kernel_checked = False


def load_kernel():
    """causal-conv1d's ``causal_conv1d_fn``, or None when the package is not installed."""
    global _kernel, _kernel_checked
    if not _kernel_checked:
        try:
            _kernel = importlib.import_module("causal_conv1d").causal_conv1d_fn
        except (ImportError, OSError, AttributeError):
            _kernel = None
        _kernel_checked = True
    return _kernel


def resolve_conv_backend(
    device: torch.device | str | None = None, scan_backend: str | None = None
) -> str:
    """``"causal-conv1d"`` on CUDA data when the package imports and no portable scan is forced
    (by ``scan_backend`` or ``SEGRESMAMBA_SCAN``); ``"numba"`` on CPU data when numba is installed
    and no other scan is forced (where the numba scan runs); else ``"torch"`` (nn.Conv1d)."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    requested = scan_backend or os.environ.get("SEGRESMAMBA_SCAN", "").strip().lower() or None
    if device.type == "cuda" and requested not in PORTABLE_SCANS and load_kernel() is not None:
        return "causal-conv1d"
    if device.type == "cpu" and requested in (None, "numba") and numba_scan.AVAILABLE:
        return "numba"
    return "torch"


def refuse_while_recording(argument: str, inputs: tuple) -> None:
    """An ``argument`` that writes into a caller's buffer is for inference only: autograd could
    not follow the result (the conv's ``out``, the scan's ``add_to``)."""
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs):
        raise ValueError(f"{argument} is for inference: autograd is recording these inputs")


def causal_conv_silu(
    x: torch.Tensor,
    conv: nn.Conv1d,
    scan_backend: str | None = None,
    order: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """SiLU(causal depthwise conv1d(x)) for token-major (batch, L, channels) tensors.

    The conv runs channels-first on a transposed view; the result comes back token-major and
    contiguous, the layout the projections and the scan read fastest. ``order`` (L,), a
    permutation of the rows: the conv runs along the sequence that visits row ``order[i]`` at
    step i, and the result stays in row layout (the numba kernel reads the rows in place; the
    others work on reordered copies).

    ``out`` (x's shape), for inference only: the result is written into it and it is returned,
    so ToM's three directions can share one buffer (a fresh tokens x channels tensor per
    direction costs its page faults every time). Refused while autograd records.
    """
    if out is not None:
        if out.shape != x.shape:
            raise ValueError(f"out must have x's shape {tuple(x.shape)}, got {tuple(out.shape)}")
        refuse_while_recording("out", (x, conv.weight, conv.bias))
    backend = resolve_conv_backend(x.device, scan_backend)
    if backend == "numba":
        from .numba_conv import causal_conv_silu_numba

        return causal_conv_silu_numba(x, conv, order, out)
    result = _conv_silu_other(x, conv, scan_backend, backend, order)
    return result if out is None else out.copy_(result)


def _conv_silu_other(
    x: torch.Tensor,
    conv: nn.Conv1d,
    scan_backend: str | None,
    backend: str,
    order: torch.Tensor | None,
) -> torch.Tensor:
    """causal-conv1d's kernel or nn.Conv1d, on reordered copies when ``order`` is given."""
    length = x.shape[1]
    if order is not None:
        out = causal_conv_silu(x.index_select(1, order), conv, scan_backend)
        return out.index_select(1, torch.argsort(order))
    if backend == "causal-conv1d":
        weight = conv.weight.view(conv.weight.shape[0], conv.weight.shape[-1])
        out = load_kernel()(x.transpose(1, 2), weight, conv.bias, activation="silu")
        return out.transpose(1, 2).contiguous()
    out = F.silu(conv(x.transpose(1, 2))[..., :length])
    return out.transpose(1, 2).contiguous()

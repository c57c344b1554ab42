"""The scan's forward recurrence compiled with numba, for CPUs.

The portable torch scan needs about nine full passes over the (tokens x channels x state)
tensor per chunk, because PyTorch cannot fuse the recurrence. Here PyTorch still computes the
decays ``exp(step * A)`` (its vectorised exp is far faster than a scalar one), and one compiled
loop does the rest in a single pass: sequential over tokens, parallel over channels, the state in
registers. The products of decays in (0, 1] never overflow, whatever the step sizes.

numba ships wheels for Windows, macOS and Linux and needs no compiler at run time; when it is
not installed the torch scan runs instead. Gradients always come from the torch scan's own
backward pass, which recomputes the states from the same inputs.
"""

from __future__ import annotations

import importlib.util
import logging

import torch

_log = logging.getLogger("segresmamba")

AVAILABLE = importlib.util.find_spec("numba") is not None
_kernel = None


def _compile():
    import numba

    @numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
    def recurrence(decay, step_u, B, C, state, y):  # pragma: no cover - compiled
        # decay: (d, T, n); step_u, y: (T, d); B, C: (T, n); state: (d, n), updated in place.
        d, length, n = decay.shape
        for channel in numba.prange(d):
            h = state[channel].copy()
            for t in range(length):
                x = step_u[t, channel]
                acc = 0.0
                for k in range(n):
                    value = decay[channel, t, k] * h[k] + x * B[t, k]
                    h[k] = value
                    acc += value * C[t, k]
                y[t, channel] = acc
            state[channel] = h

    return recurrence


def kernel():
    """The compiled recurrence (compiled, or loaded from numba's cache, on first use)."""
    global _kernel
    if _kernel is None:
        _kernel = _compile()
    return _kernel


def chunk_outputs(
    step: torch.Tensor,
    A: torch.Tensor,
    step_u: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    state: torch.Tensor,
) -> torch.Tensor:
    """``y_t = <h_t, C_t>`` for one chunk, with ``h_t = exp(step_t A) h_{t-1} + step_u_t B_t``.

    step, step_u: (T, d); A: (d, n); B, C: (T, n); state: (d, n) float32, advanced in place to
    the chunk's last state. Returns y (T, d).
    """
    import numba

    decay = torch.mul(step.t()[:, :, None], A[:, None, :]).exp_()  # (d, T, n), contiguous
    y = torch.empty_like(step_u)
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    kernel()(
        decay.numpy(),
        step_u.contiguous().numpy(),
        B.contiguous().numpy(),
        C.contiguous().numpy(),
        state.numpy(),
        y.numpy(),
    )
    return y

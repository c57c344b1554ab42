"""The numba kernels' own exp, softplus and sigmoid (vectorisable float32 arithmetic) against
PyTorch in float64, over the whole range a scan's steps and gates can take, compiled both
plainly and with the kernels' fastmath flags (FMA contraction must not break their rounding)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

numba = pytest.importorskip("numba")

from segresmamba.scan.numba_math import (  # noqa: E402
    KERNEL_OPTIONS,
    fast_exp,
    fast_exp2,
    sigmoid,
    softplus,
)


def _apply(x, exp_out, softplus_out, sigmoid_out, exp2_out):  # pragma: no cover - compiled
    for i in range(x.shape[0]):
        exp_out[i] = fast_exp(x[i])
        softplus_out[i] = softplus(x[i])
        sigmoid_out[i] = sigmoid(x[i])
        exp2_out[i] = fast_exp2(x[i])


_COMPILED = {
    "plain": numba.njit(_apply),
    "kernel flags": numba.njit(fastmath=KERNEL_OPTIONS["fastmath"])(_apply),
}


@pytest.fixture(params=sorted(_COMPILED))
def flags(request) -> str:
    return request.param


def _evaluate(x: np.ndarray, flags: str):
    outs = [np.empty_like(x) for _ in range(4)]
    _COMPILED[flags](x, *outs)
    return outs


def _relative(found: np.ndarray, exact: torch.Tensor) -> float:
    exact = exact.numpy()
    return float(np.max(np.abs(found.astype(np.float64) - exact) / np.abs(exact)))


def test_float32_is_within_a_few_ulp(flags):
    x = np.concatenate(
        [np.linspace(-30, 30, 200_001), np.linspace(-1e-3, 1e-3, 2001), [0.0, 1e-9, -1e-9]]
    ).astype(np.float32)
    exp_out, softplus_out, sigmoid_out, _ = _evaluate(x, flags)
    assert exp_out.dtype == softplus_out.dtype == sigmoid_out.dtype == np.float32
    exact = torch.from_numpy(x).double()
    eps = float(np.finfo(np.float32).eps)
    assert _relative(exp_out, exact.exp()) < 3 * eps
    assert _relative(softplus_out, torch.nn.functional.softplus(exact, threshold=1e9)) < 3 * eps
    assert _relative(sigmoid_out, torch.sigmoid(exact)) < 3 * eps
    # exp2 over the whole normal range of its results
    x2 = np.concatenate([x, np.linspace(-125.9, 126.9, 100_001, dtype=np.float32)])
    exp2_out = _evaluate(x2, flags)[3]
    assert exp2_out.dtype == np.float32
    assert _relative(exp2_out, torch.exp2(torch.from_numpy(x2).double())) < 3 * eps


def test_float32_extremes_stay_finite(flags):
    x = np.array([-1e30, -200.0, -88.0, 88.0, 200.0, 1e30], np.float32)
    exp_out, softplus_out, sigmoid_out, exp2_out = _evaluate(x, flags)
    assert np.isfinite(exp_out).all() and np.isfinite(softplus_out).all()
    assert np.isfinite(exp2_out).all() and (exp2_out >= 0).all()
    assert exp2_out[0] < 1e-37 and exp2_out[-1] > 1e38
    assert np.isfinite(sigmoid_out).all()
    np.testing.assert_allclose(softplus_out[3:], x[3:], rtol=1e-6)  # softplus(x) -> x
    assert (softplus_out[:3] >= 0).all() and (softplus_out[:3] < 1e-37).all()
    np.testing.assert_allclose(sigmoid_out, [0, 0, 0, 1, 1, 1], atol=1e-37)


def test_float64_uses_the_exact_functions(flags):
    x = np.linspace(-40, 40, 8001)
    exp_out, softplus_out, sigmoid_out, exp2_out = _evaluate(x, flags)
    exact = torch.from_numpy(x)
    assert _relative(exp_out, exact.exp()) < 1e-15
    assert _relative(exp2_out, torch.exp2(exact)) < 1e-15
    assert _relative(softplus_out, torch.nn.functional.softplus(exact, threshold=1e9)) < 1e-15
    assert _relative(sigmoid_out, torch.sigmoid(exact)) < 1e-15

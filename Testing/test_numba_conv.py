"""The numba causal conv1d + SiLU against the nn.Conv1d path it replaces on CPUs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segresmamba.scan import causal_conv
from segresmamba.scan.numba_conv import TILE, causal_conv_silu_numba


def conv1d_silu(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """The nn.Conv1d path: channels-first, left padding, cut back to L tokens."""
    return F.silu(conv(x.transpose(1, 2))[..., : x.shape[1]]).transpose(1, 2)


def make(batch: int, length: int, channels: int, dtype, seed: int, bias: bool = True):
    torch.manual_seed(seed)
    conv = nn.Conv1d(channels, channels, 4, groups=channels, padding=3, bias=bias).to(dtype)
    # a column slice of a wider tensor, as ToM passes x out of in_proj's output
    x = torch.randn(batch, length, 2 * channels, dtype=dtype)[..., :channels]
    return x, conv


@pytest.mark.parametrize("length", [1, 3, 5, 97, TILE + 3], ids=lambda n: f"L{n}")
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_forward_and_gradients_match_conv1d(length, bias):
    """float64, batch 2, strided input: output and every gradient as nn.Conv1d gives them
    (lengths shorter than the kernel, and across a tile edge)."""
    x, conv = make(2, length, 6, torch.float64, seed=length, bias=bias)
    grad = torch.randn(2, length, 6, dtype=torch.float64)
    results = []
    for fn in (conv1d_silu, causal_conv_silu_numba):
        conv.zero_grad()
        leaf = x.detach().clone().requires_grad_()
        out = fn(leaf, conv)
        out.backward(grad)
        results.append((out.detach(), leaf.grad, conv.weight.grad.clone(),
                        conv.bias.grad.clone() if bias else None))  # fmt: skip
    (ref, ref_gx, ref_gw, ref_gb), (ours, gx, gw, gb) = results
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx, ref_gx, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gw, ref_gw, rtol=1e-10, atol=1e-10)
    if bias:
        torch.testing.assert_close(gb, ref_gb, rtol=1e-10, atol=1e-10)


def test_float32_matches_conv1d():
    x, conv = make(1, 300, 16, torch.float32, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(causal_conv_silu_numba(x, conv), conv1d_silu(x, conv),
                                   rtol=1e-5, atol=1e-6)  # fmt: skip


def test_gradcheck_float64():
    x, conv = make(2, 9, 3, torch.float64, seed=5)
    leaf = x.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x: causal_conv_silu_numba(x, conv), (leaf,))
    weight = conv.weight.detach().clone().requires_grad_()
    bias = conv.bias.detach().clone().requires_grad_()

    def by_weights(weight, bias):
        from segresmamba.scan.numba_conv import _ConvSilu

        return _ConvSilu.apply(x, weight, bias, None)

    assert torch.autograd.gradcheck(by_weights, (weight, bias))


def test_cpu_data_takes_the_numba_conv_where_the_numba_scan_runs(monkeypatch):
    monkeypatch.delenv("SEGRESMAMBA_SCAN", raising=False)
    assert causal_conv.resolve_conv_backend("cpu") == "numba"
    assert causal_conv.resolve_conv_backend("cpu", scan_backend="torch") == "torch"
    monkeypatch.setenv("SEGRESMAMBA_SCAN", "torch")
    assert causal_conv.resolve_conv_backend("cpu") == "torch"
    monkeypatch.setattr(causal_conv.numba_scan, "AVAILABLE", False)
    monkeypatch.delenv("SEGRESMAMBA_SCAN")
    assert causal_conv.resolve_conv_backend("cpu") == "torch"


@pytest.mark.parametrize("scan_backend", ["numba", "torch"])
def test_conv_follows_a_row_order(scan_backend):
    """order: the conv runs along a permuted sequence of rows and writes back to the rows; the
    same as nn.Conv1d on reordered copies with the result put back, gradients too."""
    length = TILE + 9
    x, conv = make(2, length, 6, torch.float64, seed=8)
    order = torch.randperm(length, generator=torch.Generator().manual_seed(2))
    grad = torch.randn(2, length, 6, dtype=torch.float64)
    results = []
    for permuted in (True, False):
        conv.zero_grad()
        leaf = x.detach().clone().requires_grad_()
        if permuted:
            out = causal_conv.causal_conv_silu(leaf, conv, scan_backend, order=order)
        else:
            out = conv1d_silu(leaf.index_select(1, order), conv)
            out = out.index_select(1, torch.argsort(order))
        out.backward(grad)
        results.append((out.detach(), leaf.grad, conv.weight.grad.clone(), conv.bias.grad.clone()))
    for ours, reference in zip(*results):
        torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scan_backend", ["numba", "torch"])
def test_conv_writes_into_a_given_buffer(scan_backend, dtype):
    """out (inference): the result is written into the given buffer, which is returned; the
    same values as a fresh output. Refused while autograd records the conv's weights."""
    length = TILE + 9
    x, conv = make(2, length, 6, dtype, seed=9)
    order = torch.randperm(length, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = causal_conv.causal_conv_silu(x, conv, scan_backend, order=order)
        buffer = torch.full(x.shape, float("nan"), dtype=dtype)
        returned = causal_conv.causal_conv_silu(x, conv, scan_backend, order=order, out=buffer)
    assert returned is buffer
    torch.testing.assert_close(buffer, expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="inference"):
        causal_conv.causal_conv_silu(x, conv, scan_backend, out=buffer)
    with torch.no_grad(), pytest.raises(ValueError, match="x's shape"):
        causal_conv.causal_conv_silu(x, conv, scan_backend, out=buffer[:, 1:])

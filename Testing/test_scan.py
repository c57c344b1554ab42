"""The portable selective scan against a float64 per-token reference, and backend selection."""

from __future__ import annotations

import math

import pytest
import torch

from segresmamba import resolve_backend, selective_scan
from segresmamba.scan import numba_scan, selective_scan_reference, torch_scan

TOLERANCE = 1e-5
ARG_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
CHUNK_TOKENS = 64
"""Chunk length forced in these tests so that short sequences cross chunk boundaries."""


@pytest.fixture
def small_chunks(monkeypatch):
    """Make every chunk CHUNK_TOKENS long for d 5, n 16."""
    monkeypatch.setattr(torch_scan, "CHUNK_ELEMENTS", CHUNK_TOKENS * 5 * 16)
    assert torch_scan._chunk_length(5, 16) == CHUNK_TOKENS


def make_inputs(batch, d, n, length, dt_scale=1.0, seed=0):
    """Random scan inputs in float64 with Mamba-like ranges (A = -(1..n) jittered)."""
    g = torch.Generator().manual_seed(seed)
    kw = dict(dtype=torch.float64, generator=g)
    a_log = torch.log(torch.arange(1, n + 1, dtype=torch.float64)).repeat(d, 1)
    return {
        "u": torch.randn(batch, d, length, **kw),
        "delta": torch.randn(batch, d, length, **kw) * 0.5 - 2.0 + math.log(dt_scale),
        "A": -torch.exp(a_log + 0.1 * torch.randn(d, n, **kw)),
        "B": torch.randn(batch, n, length, **kw),
        "C": torch.randn(batch, n, length, **kw),
        "D": torch.randn(d, **kw),
        "z": torch.randn(batch, d, length, **kw),
        "delta_bias": 0.1 * torch.randn(d, **kw),
    }


def run_with_grads(fn, inputs, dtype, grad_out):
    leaves = {k: v.detach().to(dtype).requires_grad_() for k, v in inputs.items()}
    out = fn(**leaves, delta_softplus=True)
    out.backward(grad_out.to(dtype))
    return out.detach(), {k: v.grad for k, v in leaves.items()}


def assert_close(name, ours, reference):
    """Norm-wise relative error; an exactly-zero reference is compared at float32 round-off."""
    error = torch.linalg.norm((ours.double() - reference).flatten())
    scale = torch.linalg.norm(reference.flatten())
    assert torch.isfinite(ours).all(), f"{name}: non-finite values"
    assert error <= TOLERANCE * scale + 1e-6 * math.sqrt(reference.numel()), (
        f"{name}: relative error {float(error / max(scale, 1e-30)):.2e} > {TOLERANCE}"
    )


@pytest.mark.parametrize(
    "length", [1, 7, CHUNK_TOKENS - 1, CHUNK_TOKENS + 1, 1037], ids=lambda n: f"L{n}"
)
def test_torch_scan_matches_float64_reference(small_chunks, length):
    inputs = make_inputs(batch=2, d=5, n=16, length=length)
    grad_out = torch.randn(2, 5, length, dtype=torch.float64)
    ref_out, ref_grads = run_with_grads(selective_scan_reference, inputs, torch.float64, grad_out)
    out, grads = run_with_grads(torch_scan.selective_scan_torch, inputs, torch.float32, grad_out)
    assert out.dtype == torch.float32
    assert_close("output", out, ref_out)
    for name in ARG_NAMES:
        assert_close(f"grad {name}", grads[name], ref_grads[name])


def test_large_steps_stay_finite_and_exact(small_chunks):
    """Ten-times-larger dt forces small sub-blocks or the doubling scan: no NaN, no Inf."""
    inputs = make_inputs(batch=2, d=5, n=16, length=300, dt_scale=10.0)
    grad_out = torch.randn(2, 5, 300, dtype=torch.float64)
    ref_out, ref_grads = run_with_grads(selective_scan_reference, inputs, torch.float64, grad_out)
    out, grads = run_with_grads(torch_scan.selective_scan_torch, inputs, torch.float32, grad_out)
    assert_close("output", out, ref_out)
    for name in ARG_NAMES:
        assert_close(f"grad {name}", grads[name], ref_grads[name])


def test_doubling_fallback_is_exercised(small_chunks):
    """Huge steps overflow every sub-block size: the chunk must take the doubling path."""
    inputs = make_inputs(batch=2, d=5, n=16, length=100, dt_scale=1000.0)
    step = torch.nn.functional.softplus(inputs["delta"] + inputs["delta_bias"][None, :, None])
    rate = step[0].t().float() * inputs["A"].abs().amax(1).float()
    assert torch_scan._pick_sub_block(rate[:96].contiguous(), torch.ones(5)) is None
    ref = selective_scan_reference(**inputs, delta_softplus=True)
    out = torch_scan.selective_scan_torch(
        **{k: v.float() for k, v in inputs.items()}, delta_softplus=True
    )
    assert_close("output", out, ref)


def test_per_batch_A_matches_separate_calls():
    """A of shape (batch, d, n) runs several directions in one call, as ToM may."""
    inputs = make_inputs(batch=2, d=4, n=8, length=50)
    inputs = {k: v.float() for k, v in inputs.items()}
    A_other = inputs["A"] * 0.5
    stacked = torch_scan.selective_scan_torch(
        **{**inputs, "A": torch.stack([inputs["A"], A_other])}, delta_softplus=True
    )
    second = {k: (v[1:] if v.dim() == 3 else v) for k, v in inputs.items()}
    second["A"] = A_other
    separate = torch_scan.selective_scan_torch(**second, delta_softplus=True)
    torch.testing.assert_close(stacked[1:], separate)


def test_without_optional_terms():
    inputs = make_inputs(batch=1, d=3, n=4, length=40)
    minimal = {k: inputs[k] for k in ("u", "delta", "A", "B", "C")}
    minimal["delta"] = torch.nn.functional.softplus(minimal["delta"])  # steps must be positive
    ref = selective_scan_reference(**minimal)
    out = torch_scan.selective_scan_torch(**{k: v.float() for k, v in minimal.items()})
    assert_close("output", out, ref)


def test_shape_errors_are_clear():
    inputs = {k: v.float() for k, v in make_inputs(batch=1, d=3, n=4, length=10).items()}
    with pytest.raises(ValueError, match=r"B must have shape \(1, 4, 10\)"):
        selective_scan(**{**inputs, "B": inputs["B"][:, :, :5]})
    with pytest.raises(ValueError, match="u must be"):
        selective_scan(**{**inputs, "u": inputs["u"][0]})


def test_backend_choice(monkeypatch):
    monkeypatch.delenv("SEGRESMAMBA_SCAN", raising=False)
    assert resolve_backend(None, "cpu") == "numba"  # numba is a dependency of the engine
    monkeypatch.setattr(numba_scan, "AVAILABLE", False)
    assert resolve_backend(None, "cpu") == "torch"  # ... and optional at run time
    with pytest.raises(RuntimeError, match="needs numba"):
        resolve_backend("numba", "cpu")
    monkeypatch.setattr(numba_scan, "AVAILABLE", True)
    with pytest.raises(RuntimeError, match="runs on the CPU"):
        resolve_backend("numba", "meta")
    monkeypatch.setenv("SEGRESMAMBA_SCAN", "torch")
    assert resolve_backend(None, "cpu") == "torch"
    monkeypatch.setenv("SEGRESMAMBA_SCAN", "cuda")
    with pytest.raises(RuntimeError, match="cuda"):
        resolve_backend(None, "cpu")
    assert resolve_backend("torch", "cpu") == "torch"  # an explicit argument wins
    monkeypatch.setenv("SEGRESMAMBA_SCAN", "fast")
    with pytest.raises(ValueError, match="unknown selective-scan backend 'fast'"):
        resolve_backend(None, "cpu")


def test_dispatch_follows_the_backend(monkeypatch):
    monkeypatch.delenv("SEGRESMAMBA_SCAN", raising=False)
    inputs = {k: v.float() for k, v in make_inputs(batch=1, d=3, n=4, length=20).items()}
    for backend, direct_fn in (
        ("torch", torch_scan.selective_scan_torch),
        ("numba", numba_scan.selective_scan_numba),
    ):
        direct = direct_fn(**inputs, delta_softplus=True)
        dispatched = selective_scan(**inputs, delta_softplus=True, backend=backend)
        torch.testing.assert_close(dispatched, direct, rtol=0, atol=0)

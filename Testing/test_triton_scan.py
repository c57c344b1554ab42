"""The triton scan backend against the float64 per-token reference.

On CPU the kernels run in Triton's interpreter (TRITON_INTERPRET=1), which is how CI checks them
without a GPU; with a CUDA device the same tests also run the compiled kernels. Triton has wheels
for Linux x86_64 only: there this file fails, never skips, when triton is missing.
"""

from __future__ import annotations

import importlib
import platform
import sys

import pytest
import torch
from test_scan import ARG_NAMES, make_inputs, run_with_grads

from segresmamba import resolve_backend, selective_scan
from segresmamba.scan import selective_scan_reference, selective_scan_tokens, triton_scan

WHEEL_PLATFORM = sys.platform == "linux" and platform.machine() in ("x86_64", "AMD64")
if not WHEEL_PLATFORM and not triton_scan.AVAILABLE:
    pytest.skip("triton publishes wheels for Linux x86_64 only", allow_module_level=True)

TOLERANCE = 1e-4
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def assert_close(name, ours, reference):
    """Norm-wise relative error against the float64 reference."""
    assert torch.isfinite(ours).all(), f"{name}: non-finite values"
    error = float(torch.linalg.norm((ours.double() - reference).flatten()))
    scale = float(torch.linalg.norm(reference.flatten()))
    assert error <= TOLERANCE * scale + 1e-7 * reference.numel() ** 0.5, (
        f"{name}: relative error {error / max(scale, 1e-30):.2e} > {TOLERANCE}"
    )


def test_triton_is_installed_where_it_has_wheels():
    assert triton_scan.AVAILABLE, "pip install .[test] installs triton on Linux x86_64"


@pytest.fixture(params=DEVICES)
def device(request, monkeypatch):
    """CPU: the interpreter, with small blocks so it stays quick; CUDA: the compiled kernels."""
    if request.param == "cpu":
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        # Blocks smaller than the sizes tested, so tokens, channels and n cross block edges.
        monkeypatch.setattr(triton_scan, "BLOCK_L", 8)
        monkeypatch.setattr(triton_scan, "BLOCK_D_FORWARD", 4)
        monkeypatch.setattr(triton_scan, "BLOCK_D_BACKWARD", 4)
    kernels = importlib.import_module("segresmamba.scan.triton_kernels")
    importlib.reload(kernels)  # triton.jit reads TRITON_INTERPRET when it decorates
    yield request.param
    monkeypatch.undo()
    importlib.reload(kernels)


def check_against_reference(device, length, with_optional=True, dt_scale=1.0, d=5, n=3):
    """Forward and every gradient of the triton backend within 1e-4 of the float64 reference."""
    inputs = make_inputs(batch=2, d=d, n=n, length=length, dt_scale=dt_scale)
    if not with_optional:
        inputs = {k: v for k, v in inputs.items() if k not in ("D", "z")}
    grad_out = torch.randn(2, d, length, dtype=torch.float64)
    ref_out, ref_grads = run_with_grads(selective_scan_reference, inputs, torch.float64, grad_out)

    def triton_fn(**kw):
        return selective_scan(**kw, backend="triton")

    on_device = {k: v.to(device) for k, v in inputs.items()}
    out, grads = run_with_grads(triton_fn, on_device, torch.float32, grad_out.to(device))
    assert out.dtype == torch.float32 and out.device.type == device
    assert_close("output", out.cpu(), ref_out)
    for name in ARG_NAMES:
        if name in inputs:
            assert_close(f"grad {name}", grads[name].cpu(), ref_grads[name])


@pytest.mark.parametrize("length", [1, 7, 33, 300], ids=lambda n: f"L{n}")
def test_matches_reference_with_z_and_D(device, length):
    check_against_reference(device, length)


@pytest.mark.parametrize("length", [7, 33], ids=lambda n: f"L{n}")
def test_matches_reference_without_z_and_D(device, length):
    check_against_reference(device, length, with_optional=False)


def test_large_steps_stay_finite_and_exact(device):
    """Steps 10 and 1000 times larger: decays underflow to 0, the scan must not overflow."""
    check_against_reference(device, 40, dt_scale=10.0)
    check_against_reference(device, 20, dt_scale=1000.0)


def test_token_major_and_batched_A_match_the_torch_backend(device):
    """The layout ToM feeds (batch, L, d), read in place, and A per batch element."""
    inputs = {k: v.float().to(device) for k, v in make_inputs(2, 5, 3, 19).items()}
    inputs["A"] = torch.stack([inputs["A"], inputs["A"] * 0.5])
    tokens = {k: (v.transpose(1, 2).contiguous() if v.dim() == 3 and k != "A" else v)
              for k, v in inputs.items()}  # fmt: skip
    out = selective_scan_tokens(**tokens, delta_softplus=True, backend="triton")
    expected = selective_scan_tokens(
        **{k: v.cpu() for k, v in tokens.items()}, delta_softplus=True, backend="torch"
    )
    assert out.shape == (2, 19, 5)
    torch.testing.assert_close(out.cpu(), expected, rtol=1e-4, atol=1e-5)


def test_backend_choice(monkeypatch):
    monkeypatch.delenv("SEGRESMAMBA_SCAN", raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="needs CUDA tensors"):
        resolve_backend("triton", "cpu")
    monkeypatch.setenv("SEGRESMAMBA_SCAN", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert resolve_backend(None, "cpu") == "triton"
    monkeypatch.delenv("SEGRESMAMBA_SCAN")
    assert resolve_backend(None, "cpu") != "triton"  # never chosen for CPU data by itself
    import segresmamba.scan as scan

    monkeypatch.setattr(scan, "_cuda_kernel", lambda: None)
    assert resolve_backend(None, "cuda") == "triton"  # on CUDA without mamba-ssm
    monkeypatch.setattr(triton_scan, "AVAILABLE", False)
    assert resolve_backend(None, "cuda") == "torch"
    with pytest.raises(RuntimeError, match="needs triton"):
        resolve_backend("triton", "cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend", ["torch", "cuda"])
def test_other_backends_on_cuda_match_the_reference(backend, monkeypatch):
    """The portable scan and (when mamba-ssm built) its kernel, on CUDA tensors."""
    from segresmamba.scan.cuda_scan import load_kernel

    if backend == "cuda" and load_kernel() is None:
        pytest.skip("mamba-ssm's kernel is not installed on this GPU machine")
    inputs = make_inputs(batch=2, d=5, n=3, length=300)
    grad_out = torch.randn(2, 5, 300, dtype=torch.float64)
    ref_out, ref_grads = run_with_grads(selective_scan_reference, inputs, torch.float64, grad_out)

    def fn(**kw):
        return selective_scan(**kw, backend=backend)

    on_device = {k: v.to("cuda") for k, v in inputs.items()}
    out, grads = run_with_grads(fn, on_device, torch.float32, grad_out.to("cuda"))
    assert_close("output", out.cpu(), ref_out)
    for name in ARG_NAMES:
        assert_close(f"grad {name}", grads[name].cpu(), ref_grads[name])

"""ToM's causal conv1d: nn.Conv1d unless causal-conv1d's kernel can run, same weights either way."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segresmamba.network import TriOrientedMamba
from segresmamba.scan import causal_conv, resolve_conv_backend


def previous_causal_conv_silu(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """The nn.Conv1d path as ToM computed it before the backend choice existed."""
    return F.silu(conv(x.transpose(1, 2))[..., : x.shape[1]]).transpose(1, 2).contiguous()


def test_fallback_equals_the_previous_output_exactly(monkeypatch):
    monkeypatch.setenv("SEGRESMAMBA_SCAN", "torch")  # the portable path (numba's is its own test)
    torch.manual_seed(0)
    conv = nn.Conv1d(6, 6, 4, groups=6, padding=3)
    x = torch.randn(2, 37, 6)
    assert resolve_conv_backend(x.device) == "torch"
    assert torch.equal(causal_conv.causal_conv_silu(x, conv), previous_causal_conv_silu(x, conv))


def test_tom_output_unchanged_by_the_conv_choice():
    """A ToM layer's output with the fallback equals one computed with the previous conv path."""
    torch.manual_seed(1)
    layer = TriOrientedMamba(d_model=8, d_state=4, scan_backend="torch").eval()
    x = torch.randn(1, 8, 3, 4, 5)
    with torch.no_grad():
        ours = layer(x)
        original = causal_conv.causal_conv_silu
        try:
            import segresmamba.network.tom as tom

            def previous(t, conv, _backend=None, order=None, out=None):
                # the torch backend reorders copies up front and shares no buffers
                assert order is None and out is None
                return previous_causal_conv_silu(t, conv)

            tom.causal_conv_silu = previous
            before = layer(x)
        finally:
            tom.causal_conv_silu = original
    assert torch.equal(ours, before)


def test_backend_reports_the_fallback_without_the_package(monkeypatch):
    monkeypatch.delenv("SEGRESMAMBA_SCAN", raising=False)
    monkeypatch.setattr(causal_conv, "_kernel_checked", False)
    monkeypatch.setattr(causal_conv.importlib, "import_module", _missing)
    assert causal_conv.load_kernel() is None
    assert resolve_conv_backend("cuda") == "torch"
    assert resolve_conv_backend("cpu") == "numba"  # CPU data never needs the package


def test_kernel_choice_follows_the_scan_choice(monkeypatch):
    """With a kernel present, CUDA data takes it unless a portable scan is forced."""
    monkeypatch.delenv("SEGRESMAMBA_SCAN", raising=False)
    monkeypatch.setattr(causal_conv, "_kernel_checked", True)
    monkeypatch.setattr(causal_conv, "_kernel", object())
    assert resolve_conv_backend("cuda") == "causal-conv1d"
    assert resolve_conv_backend("cpu") == "numba"
    assert resolve_conv_backend("cuda", scan_backend="torch") == "torch"
    monkeypatch.setenv("SEGRESMAMBA_SCAN", "numba")
    assert resolve_conv_backend("cuda") == "torch"
    monkeypatch.setenv("SEGRESMAMBA_SCAN", "triton")
    assert resolve_conv_backend("cuda") == "causal-conv1d"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="causal-conv1d's kernel needs a GPU")
def test_kernel_matches_conv1d_on_cuda():
    if causal_conv.load_kernel() is None:
        pytest.skip("causal-conv1d is not installed on this GPU machine")
    conv = nn.Conv1d(64, 64, 4, groups=64, padding=3).cuda()
    x = torch.randn(2, 100, 64, device="cuda")
    torch.testing.assert_close(
        causal_conv.causal_conv_silu(x, conv),
        previous_causal_conv_silu(x, conv),
        rtol=1e-4,
        atol=1e-5,
    )


def _missing(name, *args):
    raise ImportError(f"No module named {name!r}")

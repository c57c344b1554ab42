"""SegResMamba as the design spec describes it: shapes, live Mamba layers, names, round trips."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from segresmamba import SegResMamba, TriOrientedMamba
from segresmamba.network import (
    SIZE_MULTIPLE,
    causal_conv_silu,
    direction_order,
    from_token_order,
    to_token_order,
)

SPEC_TOM_KEYS = {
    "norm.weight",
    "norm.bias",
    "in_proj.weight",
    "out_proj.weight",
    *(
        f"{name}{suffix}{leaf}"
        for suffix in ("", "_b", "_s")
        for name, leaf in (
            ("conv1d", ".weight"),
            ("conv1d", ".bias"),
            ("x_proj", ".weight"),
            ("dt_proj", ".weight"),
            ("dt_proj", ".bias"),
            ("A_log", ""),
            ("D", ""),
        )
    ),
}


@pytest.fixture(scope="module")
def ct_model() -> SegResMamba:
    torch.manual_seed(0)
    return SegResMamba(in_channels=1, out_channels=14).eval()


def test_ct_forward_shape_and_finite(ct_model):
    with torch.inference_mode():
        out = ct_model(torch.randn(1, 1, 64, 64, 64))
    assert out.shape == (1, 14, 64, 64, 64)
    assert torch.isfinite(out).all()


def test_brats_like_forward_shape_and_finite():
    torch.manual_seed(1)
    model = SegResMamba(in_channels=4, out_channels=3).eval()
    with torch.inference_mode():
        out = model(torch.randn(1, 4, 64, 64, 64))
    assert out.shape == (1, 3, 64, 64, 64)
    assert torch.isfinite(out).all()


def test_parameter_count_matches_the_design():
    """The design's prototype of the spec counted 73,548,350 parameters (1 in, 14 out)."""
    model = SegResMamba(1, 14)
    assert sum(p.numel() for p in model.parameters()) == 73_548_350


def test_every_parameter_gets_a_gradient():
    """The published code built Mamba layers it never called; here every weight must learn."""
    torch.manual_seed(2)
    model = SegResMamba(in_channels=1, out_channels=3).train()
    out = model(torch.randn(1, 1, 64, 64, 64))
    (out * torch.randn_like(out)).sum().backward()
    dead = [
        name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()
    ]
    assert not dead, f"parameters without gradient: {dead}"


@pytest.mark.parametrize(
    "parameter",
    [
        "stages.0.cmmb.tom.x_proj.weight",
        "stages.0.cmmb.tom_out.A_log_b",
        "stages.1.cmmb.tom_out.x_proj_s.weight",
        "stages.3.cmmb.tom.dt_proj_s.bias",
    ],
)
def test_changing_a_tom_weight_changes_the_output(ct_model, parameter):
    x = torch.randn(1, 1, 64, 64, 64, generator=torch.Generator().manual_seed(3))
    weight = dict(ct_model.named_parameters())[parameter]
    with torch.inference_mode():
        before = ct_model(x)
        saved = weight.detach().clone()
        weight.add_(0.5 * torch.randn_like(weight))
        after = ct_model(x)
        weight.copy_(saved)
    assert (after - before).abs().max() > 1e-6


def test_second_tom_flag():
    with_both = SegResMamba(1, 2, widths=(8, 16, 32, 64))
    first_only = SegResMamba(1, 2, widths=(8, 16, 32, 64), second_tom=False)
    assert any(".tom_out." in k for k in with_both.state_dict())
    assert not any(".tom_out." in k for k in first_only.state_dict())
    with torch.inference_mode():
        assert first_only.eval()(torch.zeros(1, 1, 64, 64, 64)).shape == (1, 2, 64, 64, 64)


def test_state_dict_keys_follow_the_spec(ct_model):
    keys = set(ct_model.state_dict())
    for stage in range(4):
        for tom in ("tom", "tom_out"):
            prefix = f"stages.{stage}.cmmb.{tom}."
            tom_keys = {k[len(prefix) :] for k in keys if k.startswith(prefix)}
            assert tom_keys == SPEC_TOM_KEYS, f"{prefix}: {sorted(tom_keys ^ SPEC_TOM_KEYS)}"
    tom = ct_model.stages[0].cmmb.tom
    d_inner, dt_rank = 96, 3
    assert tom.conv1d_b.weight.shape == (d_inner, 1, 4)
    assert tom.x_proj_s.weight.shape == (dt_rank + 32, d_inner)
    assert tom.dt_proj_b.weight.shape == (d_inner, dt_rank)
    assert tom.A_log_s.shape == (d_inner, 16)
    torch.testing.assert_close(tom.A_log[0].exp(), torch.arange(1.0, 17.0))
    assert torch.all(tom.D_b == 1)
    step = torch.nn.functional.softplus(tom.dt_proj.bias)
    assert step.min() >= 1e-4 and step.max() <= 0.1 + 1e-6


def test_safetensors_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(4)
    model = SegResMamba(1, 3, widths=(16, 32, 64, 128)).eval()
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    reloaded = SegResMamba(1, 3, widths=(16, 32, 64, 128)).eval()
    reloaded.load_state_dict(load_file(path), strict=True)
    x = torch.randn(1, 1, 64, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(reloaded(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("suffix", ["", "_b", "_s"])
def test_token_orders_are_exact_inverses(suffix):
    spatial = (3, 4, 5)
    tokens = torch.randn(2, 60, 6)  # (batch, L, channels)
    reordered = to_token_order(tokens, spatial, suffix)
    assert torch.equal(from_token_order(reordered, spatial, suffix), tokens)
    if suffix:
        assert not torch.equal(reordered, tokens)


def test_interslice_order_runs_depth_fastest():
    depth, height, width = 3, 4, 5
    grid = torch.arange(depth * height * width).reshape(1, 1, depth, height, width)
    tokens = grid.flatten(2).transpose(1, 2)  # C order, depth slowest
    order = to_token_order(tokens, (depth, height, width), "_s")[0, :, 0]
    # Consecutive tokens walk through depth at a fixed (h, w): C-order indices step by H*W.
    assert order[:depth].tolist() == [d * height * width for d in range(depth)]
    assert order[depth].item() == 1  # then the next w
    assert to_token_order(tokens, (depth, height, width), "_b")[0, 0, 0] == 59


def test_causal_conv_matches_mamba_conv1d():
    """Token-major conv equals mamba-ssm's channels-first Conv1d(padding=K-1)[..., :L] + SiLU."""
    conv = torch.nn.Conv1d(6, 6, 4, groups=6, padding=3)
    x = torch.randn(2, 6, 50)
    expected = torch.nn.functional.silu(conv(x)[..., :50])
    got = causal_conv_silu(x.transpose(1, 2), conv)
    torch.testing.assert_close(got.transpose(1, 2), expected)
    assert got.is_contiguous()


def test_tom_without_residual_runs():
    tom = TriOrientedMamba(8, residual=False).eval()
    with torch.inference_mode():
        out = tom(torch.randn(2, 8, 4, 4, 4))
    assert out.shape == (2, 8, 4, 4, 4) and torch.isfinite(out).all()


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((1, 1, 100, 64, 64), r"multiple of 32.*\(96, 64, 64\) or \(128, 64, 64\)"),
        ((1, 1, 32, 64, 64), r"at least 64.*\(64, 64, 64\)"),
        ((1, 2, 64, 64, 64), "takes 1 input channel"),
        ((1, 64, 64, 64), "5 dimensions|got 4 dimensions"),
    ],
)
def test_unusable_input_sizes_get_a_clear_error(shape, message):
    model = SegResMamba(1, 2, widths=(8, 16, 32, 64))
    with pytest.raises(ValueError, match=message):
        model(torch.zeros(shape))
    assert SIZE_MULTIPLE == 32


def test_widths_are_validated():
    with pytest.raises(ValueError, match="twice"):
        SegResMamba(1, 2, widths=(8, 16, 24, 64))


def test_scan_backends_give_the_same_model_output():
    """One state_dict, either CPU backend: the same segmentation logits."""
    torch.manual_seed(7)
    model = SegResMamba(1, 3, widths=(16, 32, 64, 128)).eval()
    x = torch.randn(1, 1, 64, 64, 64)
    outputs = {}
    with torch.inference_mode():
        for backend in ("torch", "numba"):
            model.set_scan_backend(backend)
            outputs[backend] = model(x)
    model.set_scan_backend(None)
    torch.testing.assert_close(outputs["numba"], outputs["torch"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("suffix", ["", "_b", "_s"])
def test_direction_order_lists_the_rows_to_token_order_visits(suffix):
    spatial = (3, 4, 5)
    tokens = torch.randn(2, 60, 3)
    order = direction_order(spatial, suffix)
    visited = tokens if order is None else tokens[:, order]
    assert torch.equal(visited, to_token_order(tokens, spatial, suffix))


@pytest.mark.parametrize("grad", [True, False], ids=["training", "inference"])
def test_tom_reading_rows_in_place_equals_reordered_copies(monkeypatch, grad):
    """The numba kernels follow the reversed and inter-slice orders in place, with and without
    gradients; the result and every gradient equal those of the reordered-copies path."""
    import segresmamba.network.tom as tom

    torch.manual_seed(0)
    layer = TriOrientedMamba(8, d_state=4, scan_backend="numba").double()
    x = torch.randn(2, 8, 3, 4, 5, dtype=torch.float64)
    results = []
    for in_place in (True, False):
        monkeypatch.setattr(tom, "reads_rows_in_order", lambda *args, value=in_place: value)
        layer.zero_grad()
        leaf = x.clone().requires_grad_(grad)
        with torch.set_grad_enabled(grad):
            out = layer(leaf)
        if grad:
            out.sum().backward()
            grads = [leaf.grad] + [p.grad.clone() for p in layer.parameters()]
        else:
            grads = []
        results.append([out.detach()] + grads)
    assert len(results[0]) == len(results[1])
    for ours, reference in zip(*results):
        torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-12)

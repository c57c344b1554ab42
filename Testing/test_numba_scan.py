"""The fused numba scan (forward and its own backward) against the float64 per-token reference."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_scan import ARG_NAMES, assert_close, make_inputs

from segresmamba.scan import numba_scan, selective_scan_reference

CHUNK = 16
"""Checkpoint interval forced in these tests so that short sequences cross chunk boundaries."""

DEMO = (
    Path(__file__).resolve().parents[1]
    / "SegResMambaSlicer/segresmamba/weights/demo/phantom-demo.safetensors"
)


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(numba_scan, "CHUNK", CHUNK)


def compare(inputs, length, batch, d, drop=(), softplus=True, seed=1):
    """Forward and every gradient of the numba scan (float32) against the reference (float64)."""
    inputs = {k: v for k, v in inputs.items() if k not in drop}
    if not softplus:
        inputs["delta"] = torch.nn.functional.softplus(inputs["delta"])  # steps must be positive
    grad_out = torch.randn(
        batch, d, length, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)
    )
    ref_out, ref_grads = _run(selective_scan_reference, inputs, torch.float64, grad_out, softplus)
    out, grads = _run(numba_scan.selective_scan_numba, inputs, torch.float32, grad_out, softplus)
    assert out.dtype == torch.float32
    assert_close("output", out, ref_out)
    for name in inputs:
        assert_close(f"grad {name}", grads[name], ref_grads[name])


def _run(fn, inputs, dtype, grad_out, softplus):
    leaves = {k: v.detach().to(dtype).requires_grad_() for k, v in inputs.items()}
    out = fn(**leaves, delta_softplus=softplus)
    out.backward(grad_out.to(dtype))
    return out.detach(), {k: v.grad for k, v in leaves.items()}


@pytest.mark.parametrize("length", [1, 7, CHUNK - 1, CHUNK + 1, 1037], ids=lambda n: f"L{n}")
def test_numba_scan_matches_float64_reference(small_chunks, length):
    """d = 20 covers a full block of 16 channels and a partial one."""
    compare(make_inputs(batch=2, d=20, n=16, length=length, seed=length), length, 2, 20)


@pytest.mark.parametrize("width", [16, 48, 128, 256])
def test_numba_scan_any_block_width(small_chunks, monkeypatch, width):
    """Every block width the rule can choose: d = 100 leaves a partial last block at 16 and 48
    and pads one block at 128 and 256 (the float32 forward's blocks may be wider than
    MAX_WIDTH); both batch elements run with several blocks each."""
    monkeypatch.setattr(numba_scan, "block_width", lambda channels, batch, threads, *_: width)
    compare(make_inputs(batch=2, d=100, n=16, length=41, seed=width), 41, 2, 100)


def test_block_width_keeps_threads_busy_with_long_blocks():
    # stage 0 at 96^3 on two threads: two blocks of 48 at batch 1, one block of 96 at batch 2
    assert numba_scan.block_width(96, batch=1, threads=2) == 48
    assert numba_scan.block_width(96, batch=2, threads=2) == 96
    # a multiple of 16 channels, never wider than MAX_WIDTH, never narrower than 16
    assert numba_scan.block_width(100, batch=1, threads=2) == 64
    assert numba_scan.block_width(768, batch=1, threads=1) == numba_scan.MAX_WIDTH
    assert numba_scan.block_width(3, batch=1, threads=8) == 16
    assert numba_scan.block_width(96, batch=1, threads=8) == 16
    # the float32 forward lifts the cap: stage 2 (d 384) in one block per thread, not three
    assert numba_scan.block_width(384, batch=1, threads=2) == numba_scan.MAX_WIDTH
    assert numba_scan.block_width(384, batch=1, threads=2, widest=384) == 192


@pytest.mark.parametrize(
    "drop",
    [("z",), ("D",), ("delta_bias",), ("z", "D", "delta_bias")],
    ids=lambda d: "without-" + "-".join(d),
)
def test_numba_scan_optional_terms(small_chunks, drop):
    compare(make_inputs(batch=2, d=5, n=8, length=40, seed=3), 40, 2, 5, drop=drop)


def test_numba_scan_without_softplus(small_chunks):
    compare(make_inputs(batch=1, d=3, n=4, length=33, seed=4), 33, 1, 3, softplus=False)


def test_numba_scan_large_steps_stay_finite_and_exact(small_chunks):
    """Ten-times-larger steps: decays in (0, 1], no NaN, no Inf, still exact."""
    inputs = make_inputs(batch=2, d=5, n=16, length=300, dt_scale=10.0, seed=8)
    compare(inputs, 300, 2, 5)


def test_numba_scan_huge_steps_do_not_overflow(small_chunks):
    """Steps a thousand times larger drive exp(step * A) below float32's range: still finite."""
    inputs = make_inputs(batch=1, d=4, n=16, length=200, dt_scale=1000.0, seed=6)
    ref = selective_scan_reference(**inputs, delta_softplus=True)
    out = numba_scan.selective_scan_numba(
        **{k: v.float() for k, v in inputs.items()}, delta_softplus=True
    )
    assert_close("output", out, ref)


def test_numba_scan_per_batch_A(small_chunks):
    """A of shape (batch, d, n), as ToM may pass several directions at once."""
    inputs = make_inputs(batch=2, d=4, n=8, length=50, seed=9)
    inputs["A"] = torch.stack([inputs["A"], inputs["A"] * 0.5])
    compare(inputs, 50, 2, 4)


def test_numba_scan_gradcheck_float64(small_chunks):
    """Analytic gradients of the fused kernel in float64 against finite differences."""
    inputs = make_inputs(batch=2, d=3, n=4, length=2 * CHUNK + 3, seed=11)
    names = list(ARG_NAMES)
    leaves = [inputs[k].clone().requires_grad_() for k in names]

    def fn(*args):
        return numba_scan.selective_scan_numba(**dict(zip(names, args)), delta_softplus=True)

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_demo_model_logits_agree_between_torch_and_numba():
    """The bundled demo checkpoint gives the same logits with either CPU backend."""
    from segresmamba.weights import load_checkpoint

    model, _ = load_checkpoint(DEMO, task="phantom")
    model.eval()
    torch.manual_seed(0)
    x = torch.randn(1, model.in_channels, 64, 64, 64)
    with torch.inference_mode():
        model.set_scan_backend("torch")
        torch_logits = model(x)
        model.set_scan_backend("numba")
        numba_logits = model(x)
    difference = float((torch_logits - numba_logits).abs().max())
    assert difference <= 1e-4 * max(1.0, float(torch_logits.abs().max())), difference


def _token_major(inputs: dict) -> dict:
    """make_inputs' channels-first sequences as (batch, L, .) rows; A, D, bias as they are."""
    return {k: v.transpose(1, 2).contiguous() if v.dim() == 3 else v for k, v in inputs.items()}


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_scan_follows_a_row_order_in_place(small_chunks, backend):
    """order: the sequence visits the rows in a permuted order and the result stays in row
    layout; equal to scanning reordered copies and putting the result back, gradients too.
    (numba reads the rows in place; the torch backend gets the copies made for it.)"""
    from segresmamba.scan import selective_scan_tokens

    length = 2 * CHUNK + 5
    rows = _token_major(make_inputs(batch=2, d=5, n=4, length=length, seed=11))
    order = torch.randperm(length, generator=torch.Generator().manual_seed(3))
    grad = torch.randn(2, length, 5, dtype=torch.float64)

    def in_place(leaves):
        args = [leaves[name] for name in ARG_NAMES]
        return selective_scan_tokens(*args, delta_softplus=True, backend=backend, order=order)

    def on_copies(leaves):
        visit = [a.index_select(1, order) if a.dim() == 3 else a for a in
                 (leaves[name] for name in ARG_NAMES)]  # fmt: skip
        out = selective_scan_tokens(*visit, delta_softplus=True, backend="numba")
        return out.index_select(1, torch.argsort(order))

    _assert_same_results(rows, grad, in_place, on_copies, rtol=1e-10, atol=1e-12)


def _assert_same_results(rows: dict, grad, scan, reference, rtol: float, atol: float) -> None:
    """``scan`` and ``reference`` (each: leaves -> output) give the same output, and the same
    gradient for every tensor in ``rows`` (gradients at 10x the tolerances)."""
    results = []
    for fn in (scan, reference):
        leaves = {k: v.detach().clone().requires_grad_() for k, v in rows.items()}
        out = fn(leaves)
        out.backward(grad)
        results.append((out.detach(), {k: v.grad for k, v in leaves.items()}))
    (ours, our_grads), (expected, expected_grads) = results
    torch.testing.assert_close(ours, expected, rtol=rtol, atol=atol)
    for name in rows:
        torch.testing.assert_close(
            our_grads[name], expected_grads[name], rtol=10 * rtol, atol=10 * atol
        )


def test_scan_order_must_list_every_row():
    rows = _token_major(make_inputs(batch=1, d=2, n=2, length=6))
    with pytest.raises(ValueError, match="one entry per token"):
        numba_scan.selective_scan_tokens_numba(
            *(rows[name] for name in ARG_NAMES), order=torch.arange(5)
        )


@pytest.mark.parametrize("ordered", [False, True], ids=["rows-in-order", "permuted"])
@pytest.mark.parametrize("sliced", [False, True], ids=["own-tensors", "x_proj-slices"])
@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_scan_applies_the_step_projection_itself(small_chunks, backend, ordered, sliced):
    """delta_proj (dt_proj's weight): the scan of the low-rank delta equals the scan of its
    product with the projection, forward and every gradient, the projection's included. With
    ``sliced``, delta, B and C are column slices of one tensor, as ToM's x_proj gives them (the
    numba kernels read them in place)."""
    from segresmamba.scan import selective_scan_tokens

    length, d, rank = 2 * CHUNK + 3, 6, 3
    rows = _token_major(make_inputs(batch=2, d=d, n=4, length=length, seed=12))
    g = torch.Generator().manual_seed(4)
    rows["delta"] = torch.randn(2, length, rank, dtype=torch.float64, generator=g)
    rows["delta_proj"] = torch.randn(d, rank, dtype=torch.float64, generator=g) * 0.5
    order = torch.randperm(length, generator=g) if ordered else None
    grad = torch.randn(2, length, d, dtype=torch.float64, generator=g)

    def fused(leaves):
        args = [leaves[name] for name in ARG_NAMES]
        if sliced:
            joined = torch.cat([args[1], args[3], args[4]], dim=-1)
            args[1], args[3], args[4] = joined.split([rank, 4, 4], dim=-1)
            assert not args[3].is_contiguous()
        return selective_scan_tokens(
            *args, delta_softplus=True, backend=backend, order=order,
            delta_proj=leaves["delta_proj"],
        )  # fmt: skip

    def product(leaves):
        args = [leaves[name] for name in ARG_NAMES]
        args[1] = torch.nn.functional.linear(args[1], leaves["delta_proj"])
        return selective_scan_tokens(*args, delta_softplus=True, backend="torch", order=order)

    _assert_same_results(rows, grad, fused, product, rtol=1e-9, atol=1e-11)


def test_step_projection_gradcheck_float64(small_chunks):
    rows = _token_major(make_inputs(batch=1, d=3, n=2, length=CHUNK + 2, seed=13))
    g = torch.Generator().manual_seed(5)
    low = torch.randn(1, CHUNK + 2, 2, dtype=torch.float64, generator=g).requires_grad_()
    proj = torch.randn(3, 2, dtype=torch.float64, generator=g).requires_grad_()
    bias = rows["delta_bias"].clone().requires_grad_()

    def fn(low, proj, bias):
        return numba_scan.selective_scan_tokens_numba(
            rows["u"], low, rows["A"], rows["B"], rows["C"], rows["D"], rows["z"], bias, True,
            delta_proj=proj,
        )  # fmt: skip

    assert torch.autograd.gradcheck(fn, (low, proj, bias), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_step_projection_shape_is_checked():
    from segresmamba.scan import selective_scan_tokens

    rows = _token_major(make_inputs(batch=1, d=4, n=2, length=5))
    args = [rows[name] for name in ARG_NAMES]
    args[1] = torch.randn(1, 5, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="delta_proj must be"):
        selective_scan_tokens(*args, backend="torch", delta_proj=torch.randn(4, 3))
    with pytest.raises(ValueError, match="rows for 4 channels"):
        selective_scan_tokens(*args, backend="numba", delta_proj=torch.randn(5, 2))


@pytest.mark.parametrize("ordered", [False, True], ids=["rows-in-order", "permuted"])
@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_scan_adds_into_a_given_output(small_chunks, backend, ordered):
    """add_to (inference): the result is added into the given tensor, which is returned; the
    same as adding the scan's own output. float32 and float64 buffers take the kernel's own
    path, a non-contiguous one the fallback."""
    from segresmamba.scan import selective_scan_tokens

    length = 2 * CHUNK + 5
    rows = _token_major(make_inputs(batch=2, d=5, n=4, length=length, seed=12))
    order = torch.randperm(length, generator=torch.Generator().manual_seed(4)) if ordered else None
    for dtype, contiguous in ((torch.float64, True), (torch.float32, True), (torch.float32, False)):
        args = [rows[name].to(dtype) for name in ARG_NAMES]
        start = torch.randn(2, 5, length, dtype=dtype).transpose(1, 2)  # a non-contiguous view
        start = start.contiguous() if contiguous else start
        with torch.no_grad():
            scanned = selective_scan_tokens(
                *args, delta_softplus=True, backend=backend, order=order
            )
            expected = start + scanned
            returned = selective_scan_tokens(
                *args, delta_softplus=True, backend=backend, order=order, add_to=start
            )
        assert returned is start
        tolerance = 1e-12 if dtype == torch.float64 else 1e-6
        torch.testing.assert_close(start, expected, rtol=tolerance, atol=tolerance)


def test_scan_add_to_is_refused_while_autograd_records():
    from segresmamba.scan import selective_scan_tokens

    rows = _token_major(make_inputs(batch=1, d=3, n=2, length=6))
    args = [rows[name] for name in ARG_NAMES]
    with pytest.raises(ValueError, match="u's shape"):
        selective_scan_tokens(*args, backend="numba", add_to=torch.zeros(1, 5, 3))
    args[0] = args[0].clone().requires_grad_()
    with pytest.raises(ValueError, match="inference"):
        selective_scan_tokens(*args, backend="numba", add_to=torch.zeros(1, 6, 3))

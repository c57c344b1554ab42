"""The float32 scan and conv kernels in LLVM vector code against the scalar numba kernels.

Both compute the same recurrence with the same arithmetic; the scan tests check the vector one
against the float64 reference, these check that every flag, a partly filled last group, a row
order, the state checkpoints and adding into an output behave exactly as the scalar kernel's.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from segresmamba.scan import numba_conv, numba_kernels, numba_scan, numba_simd
from segresmamba.scan.numba_conv import TILE

LENGTH, RANK, STATES = 37, 3, 16


def _operands(d: int, batch: int, projected: bool, seed: int):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, LENGTH, d, generator=g)
    z = torch.randn(batch, LENGTH, d, generator=g)
    low = torch.randn(batch, LENGTH, RANK + 2 * STATES, generator=g)  # one x_proj output
    delta, B, C = low.split([RANK, STATES, STATES], dim=-1)
    # steps stay positive without softplus too (a negative step makes the state grow)
    delta = delta.abs() if projected else torch.rand(batch, LENGTH, d, generator=g)
    A = -torch.rand(d, STATES, generator=g) * 3 - 0.1
    D, bias = torch.randn(d, generator=g), torch.rand(d, generator=g) * 0.3
    proj = torch.rand(d, RANK, generator=g) * 0.5 if projected else None
    return numba_scan._operands(u, delta, A, B, C, D, z, bias, proj, torch.float32)


def _forward(kernel, operands, rows, flags, save, accumulate, width, start):
    batch, length, d = operands[3].shape
    y = start.clone()
    checkpoints = np.zeros((batch, -(-length // 8), STATES, d), np.float32)
    kernel(*operands, rows, y.numpy(), checkpoints, *flags, save, accumulate, 8, width)
    return y, checkpoints


@pytest.mark.parametrize("d,width", [(20, 32), (96, 48), (7, 16), (100, 128)])
@pytest.mark.parametrize("projected", [True, False], ids=["projected", "direct"])
def test_vector_kernel_matches_the_scalar_kernel(d, width, projected):
    """Every combination of bias, softplus, D, z and accumulate, in a shuffled row order."""
    batch = 2
    operands = _operands(d, batch, projected, seed=d + width)
    rows = np.random.default_rng(d).permutation(LENGTH).astype(np.int64)
    start = torch.randn(batch, LENGTH, d)
    for has_bias, softplus, has_D, has_z, accumulate in itertools.product([True, False], repeat=5):
        flags = (has_bias, projected, softplus, has_D, has_z)
        want = _forward(
            numba_kernels.scan_forward, operands, rows, flags, True, accumulate, width, start
        )
        got = _forward(
            numba_simd.scan_forward_groups, operands, rows, flags, True, accumulate, width, start
        )
        for name, a, b in zip(("output", "checkpoints"), got, want):
            a, b = torch.as_tensor(a), torch.as_tensor(b)
            assert torch.isfinite(a).all(), (name, flags, accumulate)
            error = float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))
            assert error < 1e-6, (name, flags, accumulate, error)


def test_float32_forward_runs_the_vector_kernel(monkeypatch):
    """The scan picks the vector kernel for float32 (and only then)."""
    calls = []
    original = numba_simd.scan_forward_groups

    def counted(*args):
        calls.append(args[3].dtype)
        return original(*args)

    monkeypatch.setattr(numba_simd, "scan_forward_groups", counted)
    u = torch.randn(1, 9, 16)
    B = C = torch.randn(1, 9, STATES)
    for dtype in (torch.float32, torch.float64):
        numba_scan.selective_scan_tokens_numba(
            u.to(dtype),
            u.to(dtype).abs(),
            -torch.ones(16, STATES, dtype=dtype),
            B.to(dtype),
            C.to(dtype),
        )
    assert calls == [np.float32]


@pytest.mark.parametrize("channels", [7, 16, 20, 96])
@pytest.mark.parametrize("length", [1, 3, TILE + 5], ids=lambda n: f"L{n}")
def test_vector_conv_matches_the_scalar_conv(channels, length):
    """The float32 conv in vector code against the scalar kernel: partly filled last groups,
    sequences shorter than the kernel, several tiles, batch 2, a shuffled row order."""
    g = torch.Generator().manual_seed(channels + length)
    x = torch.randn(2, length, channels, generator=g)
    conv = torch.nn.Conv1d(channels, channels, 4, groups=channels, padding=3)
    _, weight_t, bias = numba_conv._operands(x, conv.weight, conv.bias)
    rows = np.random.default_rng(length).permutation(length).astype(np.int64)
    got, want = torch.empty_like(x), torch.empty_like(x)
    numba_conv.conv_silu_forward_groups(x.numpy(), weight_t, bias, rows, got.numpy())
    numba_conv.conv_silu_forward(x.numpy(), weight_t, bias, rows, want.numpy())
    torch.testing.assert_close(got, want, rtol=2e-6, atol=2e-6)


def test_float32_conv_runs_the_vector_kernel_only_on_contiguous_channels(monkeypatch):
    """A column slice (channels not contiguous) takes the scalar kernel, same result."""
    calls = []
    original = numba_conv.conv_silu_forward_groups
    monkeypatch.setattr(
        numba_conv, "conv_silu_forward_groups", lambda *a: calls.append(1) or original(*a)
    )
    conv = torch.nn.Conv1d(16, 16, 4, groups=16, padding=3)
    wide = torch.randn(1, 50, 32)
    with torch.no_grad():
        sliced = numba_conv.causal_conv_silu_numba(wide[..., ::2], conv)
        assert calls == []
        whole = numba_conv.causal_conv_silu_numba(wide[..., ::2].contiguous(), conv)
        assert calls == [1]
    torch.testing.assert_close(sliced, whole, rtol=2e-6, atol=2e-6)


_ON_ANOTHER_CPU = """
import torch
from segresmamba.scan import numba_conv, numba_scan, selective_scan_reference
from test_scan import make_inputs

torch.manual_seed(0)
inputs = make_inputs(batch=2, d=20, n=16, length=37, seed=4)
grad = torch.randn(2, 20, 37, dtype=torch.float64)
results = []
for fn, dtype in ((selective_scan_reference, torch.float64), (numba_scan.selective_scan_numba,
                                                              torch.float32)):
    leaves = {k: v.detach().to(dtype).requires_grad_() for k, v in inputs.items()}
    out = fn(**leaves, delta_softplus=True)
    out.backward(grad.to(dtype))
    results.append([out.detach().double()] + [leaves[k].grad.double() for k in sorted(leaves)])
for ours, ref in zip(*reversed(results)):
    error = float((ours - ref).abs().max() / ref.abs().max())
    assert error < 1e-5, error
x = torch.randn(2, 41, 20)
conv = torch.nn.Conv1d(20, 20, 4, groups=20, padding=3)
with torch.no_grad():
    want = torch.nn.functional.silu(conv(x.transpose(1, 2))[..., :41]).transpose(1, 2)
    torch.testing.assert_close(numba_conv.causal_conv_silu_numba(x, conv), want, rtol=1e-5,
                               atol=1e-6)
print("same")
"""


@pytest.mark.parametrize("cpu", ["haswell", "x86-64"], ids=["avx2", "sse2"])
def test_vector_code_on_cpus_without_avx512(cpu, tmp_path):
    """LLVM splits the 16-lane vectors into the target's registers and emulates the masked
    loads and stores where it has none: the scan (forward and every gradient, a partly filled
    group) and the conv compiled for AVX2 and for plain x86-64 (SSE2), in a fresh interpreter
    with a cache of its own, against the float64 reference and nn.Conv1d."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("these CPU names are x86's")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CPU_")}
    done = subprocess.run(
        [sys.executable, "-c", _ON_ANOTHER_CPU],
        env={**environment, "NUMBA_CPU_NAME": cpu, "NUMBA_CACHE_DIR": str(tmp_path),
             "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])},
        capture_output=True,
        encoding="utf-8",
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["same"]

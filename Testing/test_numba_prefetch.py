"""The kernels' prefetch hint: it compiles for the arrays they pass (3-d and 4-d, float32 and
float64, any strides), reaches LLVM as ``llvm.prefetch``, and leaves the data as it was."""

from __future__ import annotations

import numpy as np
import pytest

numba = pytest.importorskip("numba")

from segresmamba.scan.numba_prefetch import prefetch_row  # noqa: E402


@numba.njit
def _touch_rows(rows, parts):  # pragma: no cover - compiled
    total = 0.0
    for t in range(rows.shape[1]):
        prefetch_row(rows, (0, t), 0, rows.shape[2])
        prefetch_row(parts, (1, 0, t), 2, parts.shape[3] - 2)
        total += rows[0, t, 0]
    return total


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_prefetch_compiles_to_the_llvm_hint_and_changes_nothing(dtype):
    rows = np.arange(2 * 9 * 40, dtype=dtype).reshape(2, 9, 40)[:, :, ::2]  # strided columns
    parts = np.ones((2, 1, 9, 7), dtype=dtype)
    before = rows.copy(), parts.copy()
    assert _touch_rows(rows, parts) == rows[0, :, 0].sum()
    np.testing.assert_array_equal(rows, before[0])
    np.testing.assert_array_equal(parts, before[1])
    signature = _touch_rows.signatures[-1]
    assert "llvm.prefetch" in _touch_rows.inspect_llvm(signature)

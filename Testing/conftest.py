"""Shared fixtures: the real scans in ../shared/data, and torch kept to this machine's cores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

torch.set_num_threads(min(2, os.cpu_count() or 1))

if not torch.cuda.is_available():
    # Triton decorates its own library (tl.zeros, ...) once, when it is first imported, in the
    # mode TRITON_INTERPRET gives then; any test may import it first, so without a GPU the
    # interpreter is on for the whole session (the engine still never picks triton for CPU data).
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data; fails in CI (CI=true) when missing, skips elsewhere."""
    if not SHARED_DATA.is_dir():
        message = f"the real test scans are missing: expected them in {SHARED_DATA}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return SHARED_DATA

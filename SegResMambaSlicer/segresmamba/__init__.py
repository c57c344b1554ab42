"""SegResMamba: memory-efficient Mamba-based 3D medical image segmentation, as a Python engine.

This package is importable without 3D Slicer; the Slicer module is a thin face over it. The
network and scan names are loaded on first use, so light parts (``segresmamba.tasks``,
``segresmamba.home``) work before PyTorch is installed, e.g. for the Slicer module's task list.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

__all__ = ["SegResMamba", "TriOrientedMamba", "__version__", "resolve_backend", "selective_scan"]

_LAZY = {
    "SegResMamba": ".network",
    "TriOrientedMamba": ".network",
    "resolve_backend": ".scan",
    "selective_scan": ".scan",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

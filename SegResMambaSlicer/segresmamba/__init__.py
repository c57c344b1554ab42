"""SegResMamba: memory-efficient Mamba-based 3D medical image segmentation, as a Python engine.

This package is importable without 3D Slicer; the Slicer module is a thin face over it.
"""

from .network import SegResMamba, TriOrientedMamba
from .scan import resolve_backend, selective_scan

__version__ = "0.1.0"

__all__ = ["SegResMamba", "TriOrientedMamba", "__version__", "resolve_backend", "selective_scan"]

"""Inference: inputs on one grid -> RAS and task spacing -> sliding window -> labels on the
first input's grid. ``segment`` is the one entry point every face (CLI, Slicer) calls."""

from .device import resolve_device
from .geometry import affine_to_grid, itk_affine_ras, on_reference_grid, to_metatensor
from .pipeline import Progress, regions_to_labelmap, segment
from .preprocess import normalize_intensity, prepare, to_working_grid, working_spacing
from .sliding import count_windows, predict, window_size

__all__ = [
    "Progress",
    "affine_to_grid",
    "count_windows",
    "itk_affine_ras",
    "normalize_intensity",
    "on_reference_grid",
    "predict",
    "prepare",
    "regions_to_labelmap",
    "resolve_device",
    "segment",
    "to_metatensor",
    "to_working_grid",
    "window_size",
    "working_spacing",
]

"""Let LLVM give the numba kernels the CPU's full vector width.

On Intel cores with AVX-512, LLVM's tuning (``prefer-256-bit``) keeps auto-vectorised loops at
256 bits. The reason is to spare older server chips the clock drop of 512-bit instructions. The
scan's inner loops are long runs of the same exp2-and-FMA chain, and they gain from the full
width: on this project's benchmark machine the forward kernel at L = 110,592 went from 0.057 to
0.047 s, and its inter-slice direction from 0.070 to 0.056 s. CPUs without AVX-512 are not
changed.

numba fixes its code generator's CPU features the first time it builds one, so this must run
before any kernel module defines a kernel: every ``scan/numba_*`` module imports this one first.
A choice the user made through numba's own ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` is left
as it is.
"""

from __future__ import annotations

import logging
import os

__all__ = ["prefer_full_vector_width"]

_log = logging.getLogger("segresmamba.scan")


def prefer_full_vector_width() -> bool:
    """Drop LLVM's 256-bit preference on AVX-512 CPUs; returns whether it was dropped now."""
    if os.environ.get("NUMBA_CPU_NAME") or os.environ.get("NUMBA_CPU_FEATURES"):
        return False
    try:
        import llvmlite.binding as llvm
        from numba.core import config, registry
    except ImportError:
        return False
    if config.CPU_FEATURES is not None or config.CPU_NAME is not None:
        return False  # already chosen (by an earlier call, or by the user)
    if "_toplevel_target_context" in vars(registry.cpu_target):
        _log.debug("numba's code generator exists already: vector width left as it is")
        return False
    try:
        features = llvm.get_host_cpu_features().flatten()
    except RuntimeError:  # llvmlite cannot read the host's features
        return False
    if "+avx512f" not in features.split(","):
        return False
    config.CPU_FEATURES = features + ",-prefer-256-bit"
    return True

"""``segresmamba bench``: CPU benchmark of SegResMamba against its peers, reproducible on purpose.

Each model is measured in its own fresh process (:mod:`.runner` starts ``python -m
segresmamba.bench --worker ...``), so its peak RSS is its own; times are medians after a warm-up;
MACs include the selective scan, which FLOP counters miss. Results go to
``docs/benchmarks/<date>-cpu[-suffix].json`` and a regenerated section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

from .main import main

__all__ = ["main"]

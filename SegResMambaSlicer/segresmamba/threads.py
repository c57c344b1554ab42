"""Thread counts for torch and numba from the cores this process may actually use.

torch and numba size their pools from the machine's core count, not from the CPU affinity a
cluster scheduler, a container or ``taskset`` gives the process: on a 64-core node with 4 cores
allotted that is 16 threads fighting over each core. Inside 3D Slicer the engine process should
also leave one core to Slicer's interface, or the UI stutters while a scan is segmented.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import SegResMambaError

__all__ = ["ENV_RESERVE", "ENV_THREADS", "ThreadSettings", "available_cores", "configure_threads"]

ENV_THREADS = "SEGRESMAMBA_THREADS"
"""Set to a positive integer to use exactly that many threads (overrides everything else)."""

ENV_RESERVE = "SEGRESMAMBA_RESERVE_CORES"
"""Cores to leave free for other work (the Slicer module sets 1 for its interface)."""

_log = logging.getLogger("segresmamba.threads")


@dataclass(frozen=True)
class ThreadSettings:
    """What :func:`configure_threads` found and set."""

    cores: int
    reserved: int
    torch_threads: int
    numba_threads: int | None  # None: numba is not installed


def available_cores() -> int:
    """Cores this process may run on: its CPU affinity where the OS has one (Linux), else the
    machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _positive(environ: Mapping[str, str], name: str, minimum: int) -> int | None:
    text = environ.get(name, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise SegResMambaError(f"{name}={text!r}: expected a whole number of at least {minimum}")
    return value


def configure_threads(
    reserve: int | None = None, environ: Mapping[str, str] | None = None
) -> ThreadSettings:
    """Set torch's and numba's thread counts to the available cores minus ``reserve``.

    ``reserve`` None reads :data:`ENV_RESERVE` (default 0); :data:`ENV_THREADS` overrides the
    result. At least one thread is always used.
    """
    import torch

    environ = os.environ if environ is None else environ
    cores = available_cores()
    if reserve is None:
        reserve = _positive(environ, ENV_RESERVE, 0) or 0
    threads = _positive(environ, ENV_THREADS, 1) or max(1, cores - int(reserve))
    torch.set_num_threads(threads)
    numba_threads = None
    try:
        import numba
    except ImportError:
        pass
    else:  # numba's pool is sized once at import; it can use fewer threads but never more
        numba_threads = max(1, min(threads, numba.config.NUMBA_NUM_THREADS))
        numba.set_num_threads(numba_threads)
        numba_threads = numba.get_num_threads()
        # seen here: after an in-process segment() on two threads, torch still read 2 after
        # set_num_threads(1) and numba's own setting; set again, torch keeps the count asked
        torch.set_num_threads(threads)
    settings = ThreadSettings(cores, int(reserve), torch.get_num_threads(), numba_threads)
    _log.debug(
        "threads: torch %d, numba %s (%d cores available to this process, %d reserved)",
        settings.torch_threads,
        settings.numba_threads if numba_threads is not None else "not installed",
        settings.cores,
        settings.reserved,
    )
    return settings

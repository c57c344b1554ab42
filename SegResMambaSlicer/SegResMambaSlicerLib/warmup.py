"""Compile the engine's CPU kernels in the background once its packages are installed.

numba compiles the scan and conv kernels the first time they run (10 to 30 s on two cores); the
first Apply after installation would wait for that. ``segresmamba warmup`` compiles them into
numba's cache ahead of use, so the module starts it as a child process, like its other jobs,
right after installing the packages. It runs on its own: nothing waits for it, and an Apply
started meanwhile only shares the compilation (numba writes its cache files atomically).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from .process import EngineProcess, engine_environment, find_python

__all__ = ["start_background_warmup", "start_warmup", "warmup_command"]

_log = logging.getLogger(__name__)


def warmup_command(python: str) -> list[str]:
    """``python -m segresmamba warmup``: compile every kernel inference and training use."""
    return [python, "-m", "segresmamba", "warmup"]


def start_warmup(python: str, env: Mapping[str, str] | None = None) -> EngineProcess | None:
    """Start the warm-up in its own process group; None (and a log line) when it cannot start.
    Keep the returned process referenced: its ``log`` holds what it compiled."""
    process = EngineProcess(warmup_command(python), env=env)
    try:
        process.start()
    except OSError as error:
        _log.warning("SegResMamba: could not start the kernel warm-up: %s", error)
        return None
    _log.info("SegResMamba: compiling the CPU kernels in the background (segresmamba warmup)")
    return process


def start_background_warmup() -> EngineProcess | None:
    """:func:`start_warmup` with Slicer's Python (``PythonSlicer``) and startup environment, as
    the module's segmentation jobs run."""
    import slicer

    startup = getattr(slicer.util, "startupEnvironment", None)
    try:
        python = find_python(slicer.app.slicerHome)
    except FileNotFoundError as error:
        _log.warning("SegResMamba: no kernel warm-up: %s", error)
        return None
    return start_warmup(python, engine_environment(startup() if startup else None))

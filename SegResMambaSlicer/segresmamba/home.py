"""The per-user SegResMamba folder: imported and downloaded models, the user's own tasks, the
training sets they collect and the training runs that teach their models.

One place decides where a user's SegResMamba data lives, so the model cache (``models/``), the
user task registry (``tasks.json``), the training sets (``datasets/``) and the runs (``runs/``)
always sit side by side and one environment variable,
``SEGRESMAMBA_HOME``, moves both (tests, shared servers, portable installs). Standard library
only: the Slicer module reads task names through here before the engine's dependencies exist.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = [
    "home_dir",
    "user_datasets_dir",
    "user_models_dir",
    "user_runs_dir",
    "user_tasks_path",
]


def home_dir() -> Path:
    """The per-user folder: ``SEGRESMAMBA_HOME`` if set, else the platform's cache place.

    Windows ``%LOCALAPPDATA%/SegResMamba``, macOS ``~/Library/Caches/SegResMamba``, Linux
    ``$XDG_CACHE_HOME/segresmamba`` or ``~/.cache/segresmamba``. Not created here.
    """
    home = os.environ.get("SEGRESMAMBA_HOME")
    if home:
        return Path(home).expanduser()
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA")
        return (Path(local) if local else Path.home() / "AppData" / "Local") / "SegResMamba"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "SegResMamba"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache") / "segresmamba"


def user_models_dir() -> Path:
    """``home_dir()/models``: downloaded and imported checkpoints."""
    return home_dir() / "models"


def user_tasks_path() -> Path:
    """``home_dir()/tasks.json``: tasks registered by ``segresmamba models import``."""
    return home_dir() / "tasks.json"


def user_datasets_dir() -> Path:
    """``home_dir()/datasets``: one nnU-Net v2 folder per task, filled by *Add to training set*
    and ``segresmamba dataset add``."""
    return home_dir() / "datasets"


def user_runs_dir() -> Path:
    """``home_dir()/runs``: training runs started from the Slicer module (resumable)."""
    return home_dir() / "runs"

"""The per-user SegResMamba folder: imported and downloaded models, and the user's own tasks.

One place decides where a user's SegResMamba data lives, so the model cache (``models/``) and the
user task registry (``tasks.json``) always sit side by side and one environment variable,
``SEGRESMAMBA_HOME``, moves both (tests, shared servers, portable installs). Standard library
only: the Slicer module reads task names through here before the engine's dependencies exist.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["home_dir", "user_models_dir", "user_tasks_path"]


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

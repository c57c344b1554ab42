"""One exception family for the engine, so every face can report problems the same way.

Every error a user can cause (a wrong file, an unknown task, a failed download) is raised as a
:class:`SegResMambaError` with a one-line message that says what is wrong and what to do. The CLI
prints ``error: <message>`` and exits non-zero without a traceback; the Slicer module shows the
message in a dialog. Programming errors stay ordinary Python exceptions.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "DownloadError",
    "ModelNotAvailableError",
    "RegistryError",
    "SegResMambaError",
    "UnknownTaskError",
]


class SegResMambaError(Exception):
    """Base class: a problem the user can fix, with a one-line message saying how."""


class UnknownTaskError(SegResMambaError):
    """A task name that the task registry does not know; the message lists the known names."""


class RegistryError(SegResMambaError):
    """A registry data file (``tasks.json``, ``models.json``) is missing, unreadable or invalid."""


class CheckpointError(SegResMambaError):
    """A checkpoint file that cannot be used: not safetensors, corrupt, or not for this task."""


class DownloadError(SegResMambaError):
    """A model download or import failed (HTTP error, size or checksum mismatch, bad archive)."""


class ModelNotAvailableError(SegResMambaError):
    """No weights are available for a task: none published, or not downloaded/imported yet."""

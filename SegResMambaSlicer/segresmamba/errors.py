"""One exception family for the engine, so every face can report problems the same way.

Every error a user can cause (a wrong file, an unknown task, a failed download) is raised as a
:class:`SegResMambaError` with a one-line message that says what is wrong and what to do. The CLI
prints ``error: <message>`` and exits non-zero without a traceback; the Slicer module shows the
message in a dialog. Programming errors stay ordinary Python exceptions.
"""

from __future__ import annotations

__all__ = [
    "EXIT_CODES",
    "CheckpointError",
    "InputMatchError",
    "DownloadError",
    "ModelNotAvailableError",
    "RegistryError",
    "SegResMambaError",
    "UnknownTaskError",
    "exit_code_for",
]


class SegResMambaError(Exception):
    """Base class: a problem the user can fix, with a one-line message saying how."""


class UnknownTaskError(SegResMambaError):
    """A task name that the task registry does not know; the message lists the known names."""


class InputMatchError(SegResMambaError):
    """The inputs of a multi-input task cannot be told apart by name (exit code 2, usage)."""


class RegistryError(SegResMambaError):
    """A registry data file (``tasks.json``, ``models.json``) is missing, unreadable or invalid."""


class CheckpointError(SegResMambaError):
    """A checkpoint file that cannot be used: not safetensors, corrupt, or not for this task."""


class DownloadError(SegResMambaError):
    """A model download or import failed (HTTP error, size or checksum mismatch, bad archive)."""


class ModelNotAvailableError(SegResMambaError):
    """No weights are available for a task: none published, or not downloaded/imported yet."""


EXIT_OK, EXIT_UNEXPECTED, EXIT_USAGE, EXIT_MODEL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_UNEXPECTED: "unexpected error (a bug: run again with --debug and report the traceback)",
    EXIT_USAGE: "usage error or bad input (unknown task, unreadable or unsuitable image, output "
    "exists or cannot be written)",
    EXIT_MODEL: "model or weights problem (missing, corrupt or mismatched checkpoint, registry, "
    "download)",
    EXIT_INTERRUPTED: "interrupted (Ctrl+C)",
}
MODEL_ERRORS = (CheckpointError, DownloadError, ModelNotAvailableError, RegistryError)


def exit_code_for(error: BaseException) -> int:
    """The documented exit code for an exception (the CLI and its batch runner share it)."""
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(error, MODEL_ERRORS):
        return EXIT_MODEL
    if isinstance(error, SegResMambaError):
        return EXIT_USAGE
    return EXIT_UNEXPECTED

"""Atomic output files: written under a temporary name in the target folder, then renamed.

A crash, a full disk or Ctrl+C while writing must never leave a half-written segmentation where a
viewer or a pipeline would pick it up, and an existing result is only replaced when asked.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import SegResMambaError

__all__ = ["atomic_output", "check_output_path", "full_suffix"]


def full_suffix(path: str | os.PathLike) -> str:
    """The suffix that picks a file format: ``.seg.nrrd`` and ``.nii.gz`` count as one."""
    name = Path(path).name.lower()
    for double in (".seg.nrrd", ".nii.gz"):
        if name.endswith(double):
            return double
    return Path(name).suffix


def check_output_path(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Fail early (before any work) when ``path`` cannot or must not be written.

    Raises SegResMambaError for an existing file without ``overwrite``, a path that is a folder,
    or a missing or unwritable folder.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise SegResMambaError(f"output {path} is a folder; give a file name such as seg.nii.gz")
    if path.exists() and not overwrite:
        raise SegResMambaError(f"output {path} already exists; use --overwrite to replace it")
    if not folder.is_dir():
        raise SegResMambaError(f"cannot write {path}: folder {folder} does not exist")
    try:  # a real probe: permission bits say nothing for root, read-only mounts or ACLs
        handle, probe = tempfile.mkstemp(prefix=".segresmamba-probe-", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise SegResMambaError(
            f"cannot write {path}: folder {folder} is not writable ({error.strerror or error})"
        ) from None
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_output(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix, so writers pick the same format);
    on success rename it onto ``path``, on any failure delete it and leave ``path`` untouched.
    """
    path = check_output_path(path, overwrite)
    suffix = full_suffix(path)
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    try:
        handle, temporary = tempfile.mkstemp(
            prefix=f".{stem}.", suffix=f".part{suffix}", dir=path.parent or "."
        )
    except OSError as error:
        raise SegResMambaError(f"cannot write {path}: {error.strerror or error}") from None
    os.close(handle)
    temporary = Path(temporary)
    try:
        yield temporary
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        if path.exists() and not overwrite:  # appeared while we were writing
            raise SegResMambaError(f"output {path} already exists; use --overwrite to replace it")
        os.replace(temporary, path)
    except OSError as error:
        raise SegResMambaError(f"cannot write {path}: {error.strerror or error}") from None
    finally:
        temporary.unlink(missing_ok=True)

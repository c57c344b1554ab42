"""Atomic output files: written under a temporary name in the target folder, then renamed.

A crash, a full disk or Ctrl+C while writing must never leave a half-written segmentation where a
viewer or a pipeline would pick it up, and an existing result is only replaced when asked.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import SegResMambaError

__all__ = ["atomic_output", "check_output_path", "full_suffix", "land", "temporary_beside"]


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


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    with contextlib.suppress(OSError):
        os.fsync(fd)
    os.close(fd)


def land(temporary: str | os.PathLike, final: str | os.PathLike) -> Path:
    """fsync ``temporary`` and rename it onto ``final`` (same folder), replacing what is there.

    After a crash the final name holds either the old file or the complete new one.
    """
    with open(temporary, "rb+") as file:
        os.fsync(file.fileno())
    os.replace(temporary, final)
    _fsync_dir(Path(final).parent)
    return Path(final)


@contextmanager
def temporary_beside(final: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A fresh temporary path in ``final``'s folder (created if needed), removed afterwards
    unless it was landed. Same folder, so the rename onto ``final`` is atomic."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=suffix, dir=final.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
    finally:
        temporary.unlink(missing_ok=True)


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
    try:
        with temporary_beside(path, suffix=f".part{full_suffix(path)}") as temporary:
            yield temporary
            os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
            if path.exists() and not overwrite:  # appeared while we were writing
                raise SegResMambaError(
                    f"output {path} already exists; use --overwrite to replace it"
                )
            land(temporary, path)
    except OSError as error:
        raise SegResMambaError(f"cannot write {path}: {error.strerror or error}") from None

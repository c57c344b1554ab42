"""Small file helpers the weights code shares: atomic landing and checksums.

A model file is either complete and checked under its final name or absent; a crash, a full disk
or a dropped download must never leave a half-written file where a good one is expected.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """The file's SHA-256 as 64 lower-case hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_file(path: str | Path) -> None:
    with open(path, "rb+") as file:
        os.fsync(file.fileno())


def fsync_dir(folder: str | Path) -> None:
    """Make a rename durable; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def land(temporary: str | Path, final: str | Path) -> Path:
    """fsync ``temporary`` and rename it to ``final`` (same folder), replacing what is there."""
    fsync_file(temporary)
    os.replace(temporary, final)
    fsync_dir(Path(final).parent)
    return Path(final)


@contextlib.contextmanager
def temporary_beside(final: str | Path) -> Iterator[Path]:
    """A fresh temporary path in ``final``'s folder, removed afterwards unless it was landed."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    temporary = Path(name)
    try:
        yield temporary
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()

"""Small file helpers the weights code shares: checksums, and the engine's atomic landing.

A model file is either complete and checked under its final name or absent; a crash, a full disk
or a dropped download must never leave a half-written file where a good one is expected. The
temporary-file-then-rename mechanism is the one every output of the engine uses
(``segresmamba.io.atomic``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..io.atomic import land, temporary_beside

__all__ = ["CHUNK", "land", "sha256_file", "temporary_beside"]

CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """The file's SHA-256 as 64 lower-case hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()

"""Downloading registry models into the cache, resumably and checked.

Hospital networks drop long downloads, so a download resumes from ``<file>.part`` with an HTTP
Range request and retries once on a dropped connection. The finished file must have the
registry's size and SHA-256 and its header must load before it is renamed into place; nothing
half-done or unchecked ever sits under a model's final name. Only urllib is used.
"""

from __future__ import annotations

import http.client
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from ..errors import CheckpointError, DownloadError, ModelNotAvailableError
from ._files import CHUNK, land, sha256_file
from .checkpoint import read_header
from .registry import (
    ModelInfo,
    get_model,
    no_weights_message,
)

Progress = bool | Callable[[int, int], None]
"""True: a tqdm bar on stderr; False: silent; a callable gets (bytes done, bytes total)."""


class _Dropped(Exception):
    """The connection ended before the whole file came; the .part file is kept for resuming."""


def download_model(name: str, progress: Progress = True, *, timeout: float = 60.0) -> Path:
    """Download registry model ``name`` into the cache and return its path.

    Resumes a partial ``<file>.part`` with an HTTP Range request and retries once when the
    connection drops. The file must have the registry's size and SHA-256 and its header must
    load; then it is renamed into place. Raises DownloadError naming the URL and the problem
    (HTTP status, checksum, size); a failed check deletes the partial file.
    """
    info = get_model(name)
    if not info.url:
        raise ModelNotAvailableError(no_weights_message(info.task))
    if not info.url.lower().startswith(("http://", "https://")):
        raise DownloadError(f"model {name}: only http(s) downloads are supported, not {info.url}")
    final = info.cached_path()
    if final.is_file():
        if final.stat().st_size == info.size and sha256_file(final) == info.sha256:
            return final
        final.unlink()  # damaged or stale: never leave it where a good file is expected
    part = final.with_name(final.name + ".part")
    final.parent.mkdir(parents=True, exist_ok=True)
    for attempt in (1, 2):
        try:
            _fetch(info, part, progress, timeout)
            break
        except _Dropped as error:
            if attempt == 2:
                kept = part.stat().st_size if part.exists() else 0
                raise DownloadError(
                    f"download of {info.url} was interrupted twice ({error}); {kept} of "
                    f"{info.size} bytes are kept in {part}; run the download again to resume"
                ) from None
    _check_download(info, part)
    return land(part, final)


def _fetch(info: ModelInfo, part: Path, progress: Progress, timeout: float) -> None:
    """Bring ``part`` up to the full size: append from where it stops, or start over."""
    url, size = info.url, info.size
    start = part.stat().st_size if part.exists() else 0
    if size is not None and start > size:
        part.unlink()
        start = 0
    if size is not None and start == size:
        return
    headers = {"User-Agent": "segresmamba", "Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        response = urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=timeout
        )
    except urllib.error.HTTPError as error:
        if error.code == 416 and start:  # our partial file does not fit the server's file
            part.unlink()
            raise _Dropped("the server refused to resume; starting again") from None
        raise DownloadError(f"download of {url} failed: HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        if isinstance(error.reason, (TimeoutError, socket.timeout, ConnectionError)):
            raise _Dropped(str(error.reason)) from None
        raise DownloadError(f"cannot reach {url}: {error.reason}") from None
    except (TimeoutError, ConnectionError, http.client.HTTPException) as error:
        raise _Dropped(str(error) or type(error).__name__) from None
    with response:
        mode = "ab"
        if start and response.status == 200:  # the server ignored Range: it sends everything
            start, mode = 0, "wb"
        elif start and not (response.headers.get("Content-Range") or "").startswith(
            f"bytes {start}-"
        ):
            part.unlink()
            raise _Dropped(
                f"the server resumed at the wrong place ({response.headers.get('Content-Range')})"
            )
        length = response.headers.get("Content-Length")
        total = size if size is not None else (start + int(length) if length else None)
        received = _copy_body(response, part, mode, start, total, info, progress)
    if total is not None and start + received < total:
        raise _Dropped(f"connection closed after {start + received} of {total} bytes")


def _copy_body(
    response,
    part: Path,
    mode: str,
    start: int,
    total: int | None,
    info: ModelInfo,
    progress: Progress,
) -> int:
    bar = tqdm(
        total=total,
        initial=start,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=f"downloading {info.name}",
        disable=progress is not True,
        leave=False,
    )
    received = 0
    with bar, open(part, mode) as out:
        while True:
            try:
                block = response.read(CHUNK)
            except (TimeoutError, ConnectionError, http.client.HTTPException) as error:
                raise _Dropped(str(error) or type(error).__name__) from None
            if not block:
                break
            if total is not None and start + received + len(block) > total:
                out.close()
                part.unlink()
                raise DownloadError(f"{info.url} sends more than the registry's {total} bytes")
            out.write(block)
            received += len(block)
            bar.update(len(block))
            if callable(progress):
                progress(start + received, total or 0)
        out.flush()
        os.fsync(out.fileno())
    return received


def _check_download(info: ModelInfo, part: Path) -> None:
    """Size, SHA-256 and header of a finished download; a bad file is deleted."""
    size = part.stat().st_size
    problem = None
    if info.size is not None and size != info.size:
        problem = f"it has {size} bytes, the registry says {info.size}"
    else:
        digest = sha256_file(part)
        if info.sha256 is not None and digest != info.sha256:
            problem = f"checksum mismatch: sha256 {digest}, the registry says {info.sha256}"
        else:
            try:
                read_header(part, info.task)
            except CheckpointError as error:
                problem = f"it is not a usable checkpoint: {error}"
    if problem:
        part.unlink()
        raise DownloadError(
            f"download of {info.url} is bad ({problem}); the file was deleted. Try again; if it "
            "keeps failing, the file on the server or a proxy in between is at fault"
        )

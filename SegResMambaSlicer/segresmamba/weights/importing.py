"""Offline import and end-to-end verification of checkpoints in the cache.

Many sites have no internet: ``import_model`` takes a checkpoint carried in by hand, as a
``.safetensors`` file or a ``.zip`` holding exactly one, checks it as a download is checked
(SHA-256 against the registry when the registry knows the model, header and weights must load)
and renames it into the cache. ``verify_model`` re-checks a cached model or any checkpoint file.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import (
    CheckpointError,
    DownloadError,
    ModelNotAvailableError,
    RegistryError,
    SegResMambaError,
    UnknownTaskError,
)
from ..tasks import Task, builtin_tasks, get_task, task_from_dict, task_names, user_tasks
from ..tasks.user import check_registrable, register_task, same_task
from ._files import CHUNK, land, sha256_file, temporary_beside
from .checkpoint import load_checkpoint, read_header
from .registry import NAME_PATTERN, ModelInfo, list_models, models_dir
from .versions import get_version, model_versions, next_version, split_version, version_path

MAX_IMPORT_BYTES = 8 << 30
"""Largest member accepted from a zip whose model the registry does not size (zip-bomb guard)."""


def import_model(
    file_or_zip: str | os.PathLike, name: str | None = None, *, overwrite: bool = False
) -> Path:
    """Copy a checkpoint carried in by hand (``.safetensors``, or a ``.zip`` holding exactly one)
    into the cache, for sites without internet. Returns its path in the cache.

    A checkpoint of one of the user's own tasks (its header carries ``task_definition``, or the
    task was registered before) becomes that task's next version (see ``versions``), so a new
    model never replaces one that worked; the task registry takes the newest version's
    definition. The same file again returns the version it already is.

    Any other file becomes the registry model whose SHA-256 it has, else the default registry
    model of its header's task, else a model named ``name`` or after the file. A registry model
    with a published SHA-256 only accepts that exact file; an existing different file is
    replaced only with ``overwrite=True``. The checkpoint must load (header and weights) before
    it is renamed into place. Raises DownloadError naming the problem, RegistryError for a task
    definition that is invalid or takes a built-in task's name.
    """
    source, is_zip = _checked_source(file_or_zip, name)
    try:
        return _import(source, is_zip, name, overwrite)
    except OSError as error:  # a read-only or misplaced SEGRESMAMBA_HOME, a full disk
        where = f" ({error.filename})" if error.filename else ""
        raise SegResMambaError(
            f"cannot import {source.name} into {models_dir()}: {error.strerror or error}{where}"
        ) from None


def _import(source: Path, is_zip: bool, name: str | None, overwrite: bool) -> Path:
    """:func:`import_model` once the source is checked; nothing lands until it all passed."""
    registry = {m.name: m for m in list_models()}
    wanted = registry.get(name) if name else None
    with temporary_beside(models_dir() / ".import") as temporary:
        if is_zip:
            _extract_single(source, temporary, wanted.filename if wanted else None, wanted)
        else:
            shutil.copyfile(source, temporary)
        try:
            header = read_header(temporary)
        except CheckpointError as error:
            raise DownloadError(_import_failure(source, temporary, error)) from None
        task, own = _checkpoint_task(header, source.name)
        digest, size = sha256_file(temporary), temporary.stat().st_size
        if own:
            if name is not None:
                raise DownloadError(
                    f"cannot import {source.name} as {name!r}: models of your own task "
                    f"{task.name} are kept as its versions ({task.name}@1, @2, ...); import it "
                    "without --name"
                )
            _check_loads(source, temporary, task)
            return _land_version(temporary, task, digest, source.name)
        if name is not None and wanted is None and name != task.name and name in task_names():
            raise DownloadError(
                f"cannot import {source.name} as {name!r}: that is the name of task {name}, and "
                f"this checkpoint is for task {task.name}; choose a model name of its own"
            )
        info = wanted or _choose_entry(name, task.name, digest, registry)
        if info is not None:
            _check_against_registry(info, task.name, digest, size, source.name)
            final = info.cached_path()
        else:
            final = models_dir() / f"{name or _safe_stem(source)}.safetensors"
        _check_loads(source, temporary, task)
        if final.exists() and sha256_file(final) == digest:
            return final
        if final.exists() and not overwrite:
            raise DownloadError(
                f"a different checkpoint is already imported as {final.name}; pass "
                "overwrite=True (--overwrite) to replace it"
            )
        return land(temporary, final)


def _checked_source(file_or_zip: str | os.PathLike, name: str | None) -> tuple[Path, bool]:
    """The file to import and whether it is a zip; refuses what cannot be a checkpoint."""
    source = Path(file_or_zip)
    if not source.is_file():
        raise DownloadError(f"cannot import {source}: no such file")
    suffix = source.suffix.lower()
    is_zip = suffix == ".zip" or (suffix != ".safetensors" and zipfile.is_zipfile(source))
    if not is_zip and suffix != ".safetensors":
        raise DownloadError(
            f"cannot import {source.name}: give a .safetensors checkpoint or a .zip holding one"
        )
    if name is not None and not NAME_PATTERN.match(name):
        raise DownloadError(f"model name {name!r} may hold only letters, digits, '.', '_' and '-'")
    return source, is_zip


def _check_loads(source: Path, temporary: Path, task: Task) -> None:
    """Header and every weight must load for ``task`` before anything lands in the cache."""
    try:
        load_checkpoint(temporary, task=task)
    except CheckpointError as error:
        raise DownloadError(_import_failure(source, temporary, error)) from None


def _land_version(temporary: Path, task: Task, digest: str, shown: str) -> Path:
    """Land a user task's checkpoint as its next version, or return the version it already is.

    The file lands before the task registry changes, and the registry takes the newest
    version's definition even when the file was there already, so an import interrupted
    between the two is completed by importing the same file again.
    """
    newest = next_version(task.name) - 1
    for found in model_versions(task.name):
        if sha256_file(found.path) == digest:
            if found.version == newest:
                register_task(task, True, shown)
            return found.path
    landed = land(temporary, version_path(task.name, newest + 1))
    register_task(task, True, shown)
    return landed


def _checkpoint_task(header: dict[str, Any], shown: str) -> tuple[Task, bool]:
    """The checkpoint's task, and whether it is one of the user's own (imported as a version).

    A built-in task's checkpoint needs nothing registered, but its definition (when the header
    carries one) must not contradict the built-in task. Any other task comes from the header's
    ``task_definition``, held to the bundled tasks' schema and rules; it may differ from the
    registered one (a label added by fine-tuning): it is the definition of a new version.
    """
    name, definition = header["task"], header.get("task_definition")
    builtin = {task.name: task for task in builtin_tasks()}
    defined = None
    if definition is not None:
        if not isinstance(definition, dict) or definition.get("name") != name:
            raise RegistryError(
                f"cannot import {shown}: its task_definition is not a definition of task {name!r}"
            )
        defined = task_from_dict(definition, source=f"{shown}'s task definition")
    if name in builtin:
        if defined is not None and not same_task(defined, builtin[name]):
            check_registrable(defined, True, shown)  # raises: a built-in task's name
        return builtin[name], False
    if defined is None:
        try:
            task = get_task(name)
        except UnknownTaskError:
            raise RegistryError(
                f"cannot import {shown}: it is for task {name!r}, which is not registered, and its "
                "header carries no task definition (written by an older segresmamba)"
            ) from None
        return task, task.name in _user_task_names()
    return defined, True


def _user_task_names() -> set[str]:
    return {task.name for task in user_tasks()}


def _import_failure(source: Path, temporary: Path, error: Exception) -> str:
    return f"cannot import {source.name}: " + str(error).replace(temporary.name, source.name)


def _choose_entry(
    name: str | None, task: str, digest: str, registry: dict[str, ModelInfo]
) -> ModelInfo | None:
    if name is not None:
        return None  # a name the registry does not know: a custom model
    for info in registry.values():
        if info.sha256 == digest:
            return info
    defaults = sorted((m for m in registry.values() if m.task == task), key=lambda m: not m.default)
    return defaults[0] if defaults else None


def _check_against_registry(info: ModelInfo, task: str, digest: str, size: int, shown: str) -> None:
    if info.task != task:
        raise DownloadError(
            f"cannot import {shown}: it is a {task} checkpoint, model {info.name} is for {info.task}"
        )
    if info.sha256 is not None and (digest != info.sha256 or size != info.size):
        raise DownloadError(
            f"cannot import {shown} as model {info.name}: its sha256 {digest} is not the published "
            f"{info.sha256}; the file is damaged or a different checkpoint (import your own "
            "checkpoints under a name of your choosing)"
        )


def _extract_single(
    archive: Path, target: Path, expected: str | None, info: ModelInfo | None
) -> None:
    """Copy the one checkpoint out of a zip, refusing unsafe names, extra or missing members."""
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            for member in zf.infolist():
                if _unsafe(member.filename):
                    raise DownloadError(
                        f"{archive.name} holds an unsafe member name {member.filename!r}; refused"
                    )
            names = [m.filename for m in members]
            want = expected or next((n for n in names if n.lower().endswith(".safetensors")), None)
            if want is None or want not in names:
                raise DownloadError(
                    f"{archive.name} lacks the expected member {expected or '*.safetensors'} "
                    f"(it holds: {', '.join(names) or 'nothing'})"
                )
            extra = [n for n in names if n != want]
            if extra:
                raise DownloadError(
                    f"{archive.name} holds unexpected member(s) {', '.join(extra)}; it must hold "
                    f"exactly one checkpoint ({want})"
                )
            member = members[names.index(want)]
            limit = info.size if info and info.size else MAX_IMPORT_BYTES
            if member.file_size > limit:
                raise DownloadError(
                    f"{archive.name}: {want} is larger than expected ({member.file_size} bytes)"
                )
            with zf.open(member) as src, open(target, "wb") as out:
                copied = 0
                for block in iter(lambda: src.read(CHUNK), b""):
                    copied += len(block)
                    if copied > limit:
                        raise DownloadError(
                            f"{archive.name}: {want} unpacks to more than {limit} bytes"
                        )
                    out.write(block)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as error:
        raise DownloadError(f"cannot read {archive.name} as a zip: {error}") from None


def _unsafe(member: str) -> bool:
    path = PurePosixPath(member)
    return (
        member.startswith(("/", "\\"))
        or "\\" in member
        or ":" in member
        or any(part == ".." for part in path.parts)
    )


def _safe_stem(path: Path) -> str:
    stem = "".join(
        c if c.isalnum() or c in "._-" else "-" for c in path.name.removesuffix(path.suffix)
    )
    return stem.strip(".-") or "imported"


@dataclass(frozen=True)
class VerifiedModel:
    """A checkpoint that passed :func:`verify_model`."""

    path: Path
    name: str | None
    task: str
    sha256: str
    size: int
    header: dict[str, Any]


def verify_model(name_or_path: str | os.PathLike) -> VerifiedModel:
    """Check a registry model (by name) or a checkpoint file end to end.

    Size and SHA-256 against the registry when it knows the model, then the header and every
    weight must load. Raises CheckpointError (corrupt, modified, wrong network) or
    ModelNotAvailableError (no file) naming the problem.
    """
    path, info = _locate(name_or_path)
    size, digest = path.stat().st_size, sha256_file(path)
    if info is None:
        info = next((m for m in list_models() if m.sha256 == digest), None)
    if (
        info is not None
        and info.sha256 is not None
        and (digest != info.sha256 or size != info.size)
    ):
        raise CheckpointError(
            f"{path} does not match model {info.name} in the registry (sha256 {digest}, size "
            f"{size}; expected {info.sha256}, {info.size}): the file is corrupt or modified; "
            "delete it and download or import it again"
        )
    _, header = load_checkpoint(path, task=info.task if info else None)
    return VerifiedModel(path, info.name if info else None, header["task"], digest, size, header)


def _locate(name_or_path: str | os.PathLike) -> tuple[Path, ModelInfo | None]:
    text = os.fspath(name_or_path)
    if not isinstance(name_or_path, os.PathLike) and "@" in text and not Path(text).is_file():
        task, version = split_version(text)  # NAME@K: a version of a user's own task
        return get_version(task, version).path, None
    if (
        not isinstance(name_or_path, os.PathLike)
        and NAME_PATTERN.match(text)
        and not text.endswith(".safetensors")
    ):
        registry = {m.name: m for m in list_models()}
        if text in registry:
            info = registry[text]
            path = info.local_path()
            if path is None:
                raise ModelNotAvailableError(
                    f"model {text} is not in the cache ({info.cached_path()}); download or import it first"
                )
            return path, info
        imported = models_dir() / f"{text}.safetensors"
        if imported.is_file():
            return imported, None
        if not Path(text).is_file():
            raise ModelNotAvailableError(f"no model or file called {text!r}")
    path = Path(text).expanduser()
    if not path.is_file():
        raise ModelNotAvailableError(f"checkpoint file {path} does not exist")
    return path, None

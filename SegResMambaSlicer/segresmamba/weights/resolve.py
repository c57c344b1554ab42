"""Which checkpoint file a task uses: a path, a registry model (bundled, cached or downloaded),
or a checkpoint imported for a user's own task.

Kept apart from ``registry`` so that the registry (data) and ``download`` (network) do not import
each other: this module sits above both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, ModelNotAvailableError
from ..tasks import Task, get_task
from .checkpoint import read_header
from .download import download_model
from .registry import (
    IMPORT_HINT,
    NAME_PATTERN,
    ModelInfo,
    list_models,
    models_dir,
    no_weights_message,
)
from .versions import SEPARATOR, get_version, model_versions, split_version

__all__ = ["ImportedModel", "imported_models", "resolve_model"]


@dataclass(frozen=True)
class ImportedModel:
    """A checkpoint in the cache that no ``models.json`` entry names (imported by hand)."""

    name: str
    task: str
    path: Path


def imported_models() -> list[ImportedModel]:
    """Checkpoints in the cache's ``models/`` that the registry does not list, by name.

    Files whose header cannot be read are left out: ``models verify`` names their problem.
    """
    folder = models_dir()
    if not folder.is_dir():
        return []
    known = {info.filename for info in list_models()}
    found = []
    for path in sorted(folder.glob("*.safetensors")):
        if path.name in known:
            continue
        try:
            task = read_header(path)["task"]
        except CheckpointError:
            continue
        found.append(ImportedModel(path.stem, task, path))
    return found


def resolve_model(
    task: str | Task,
    model: str | os.PathLike | None = None,
    *,
    version: int | None = None,
    download: bool = True,
    progress: Any = True,
) -> Path:
    """The checkpoint file to use for ``task``.

    ``model`` may be a file path, a registry name, the name of an imported checkpoint, or
    ``NAME@K``; ``version`` (or ``task`` given as ``NAME@K``) picks version K of a user's own
    task. None takes the task's default registry model, else the newest version imported for
    the task (a task registered by ``models import`` has no registry entry). A registry model
    that is neither bundled nor in the cache is downloaded when it has a url (unless
    ``download=False``). Raises ModelNotAvailableError saying what to do when there is no file.

    An older version may carry other labels than the registered task: load it with its own
    ``ModelVersion.task_definition()`` (``task_version`` gives both).
    """
    if isinstance(task, str):
        task, version = _with_version(task, version)
    task = get_task(task)
    if isinstance(model, str) and SEPARATOR in model and not _looks_like_path(model):
        if split_version(model)[0] == task.name:
            model, version = None, _with_version(model, version)[1]
    if version is not None:
        if model is not None:
            raise ModelNotAvailableError(
                f"give version {version} of task {task.name} or model {model}, not both"
            )
        return get_version(task.name, version).path
    if model is not None and _looks_like_path(model):
        path = Path(model).expanduser()
        if not path.is_file():
            raise ModelNotAvailableError(f"checkpoint file {path} does not exist")
        return path.resolve()
    models = {m.name: m for m in list_models()}
    if model is None:
        candidates = sorted(
            (m for m in models.values() if m.task == task.name), key=lambda m: not m.default
        )
        if not candidates:
            return _imported_for(task.name)
        info = candidates[0]
    elif str(model) in models:
        info = models[str(model)]
        if info.task != task.name:
            raise ModelNotAvailableError(
                f"model {info.name} is for task {info.task}, not {task.name}"
            )
    else:
        imported = models_dir() / f"{model}.safetensors"
        if NAME_PATTERN.match(str(model)) and imported.is_file():
            return imported
        known = ", ".join(m.name for m in models.values() if m.task == task.name) or "none"
        raise ModelNotAvailableError(
            f"unknown model {model!r} for task {task.name} (registry models: {known}); give a "
            f"checkpoint file path or {IMPORT_HINT}"
        )
    return _local_or_download(info, download, progress)


def _with_version(text: str, version: int | None) -> tuple[str, int | None]:
    """``NAME@K`` split, refusing a second, different version given beside it."""
    name, named = split_version(text)
    if named is not None and version is not None and named != version:
        raise ModelNotAvailableError(f"{text} and version {version} disagree; give one version")
    return name, version if named is None else named


def _imported_for(task: str) -> Path:
    """The newest version imported for a task without registry models, else (imported under
    another name before versions existed) the first imported file whose header is for it."""
    versions = model_versions(task)
    if versions:
        return versions[-1].path
    for found in imported_models():
        if found.task == task:
            return found.path
    raise ModelNotAvailableError(no_weights_message(task))


def _local_or_download(info: ModelInfo, download: bool, progress: Any) -> Path:
    path = info.local_path()
    if path is not None:
        if info.size is not None and path.stat().st_size != info.size:
            fix = (
                "update models.json: python -m segresmamba.weights.registry FILE --update NAME"
                if path == info.bundled_path()
                else "delete it and download or import it again"
            )
            raise ModelNotAvailableError(
                f"{path} has {path.stat().st_size} bytes, model {info.name} in models.json has "
                f"{info.size}; {fix}"
            )
        return path
    if info.url:
        if not download:
            raise ModelNotAvailableError(
                f"model {info.name} is not downloaded yet; run `segresmamba models download {info.name}`"
            )
        return download_model(info.name, progress=progress)
    if info.bundled:
        raise ModelNotAvailableError(
            f"the bundled model {info.name} is missing (expected {info.bundled_path()}); "
            f"reinstall segresmamba or {IMPORT_HINT}"
        )
    raise ModelNotAvailableError(no_weights_message(info.task))


def _looks_like_path(model: str | os.PathLike) -> bool:
    if isinstance(model, os.PathLike):
        return True
    return "/" in model or "\\" in model or model.endswith(".safetensors") or Path(model).is_file()

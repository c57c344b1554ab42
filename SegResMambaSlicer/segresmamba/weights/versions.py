"""Versions of the models of a user's own task: each import is kept beside the earlier ones.

Fine-tuning on one more corrected case can make a model worse, so a new model never replaces the
one that worked yesterday: importing a checkpoint of a user task registers its next version, and
``segresmamba segment -t NAME@K`` goes back to any of them. Version 1 is
``models/<task>.safetensors`` (the name imports always used, so a model imported before versions
existed is version 1); version K >= 2 is ``models/<task>@K.safetensors``, spelled as on the
command line. ``@`` cannot occur in a task name, so one task's file is never another's version.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, ModelNotAvailableError, UnknownTaskError
from ..tasks import Task, get_task, task_from_dict, user_tasks
from .checkpoint import read_header
from .registry import IMPORT_HINT, models_dir

__all__ = [
    "ModelVersion",
    "get_version",
    "model_versions",
    "next_version",
    "split_version",
    "task_version",
    "version_of",
    "version_path",
]

SEPARATOR = "@"
_VERSION_FILE = re.compile(r"^(?P<task>.+)@(?P<version>[1-9][0-9]*)\.safetensors$")


@dataclass(frozen=True)
class ModelVersion:
    """One imported version of a user task's model, with what its header says about training."""

    task: str
    version: int
    path: Path
    cases: int | None
    steps: int | None
    dice: float | None
    date: str | None

    @property
    def name(self) -> str:
        """``NAME@K``, as ``segment -t`` and ``models list`` spell it."""
        return f"{self.task}{SEPARATOR}{self.version}"

    def task_definition(self) -> Task:
        """The task this version was trained for, from its own header: an older version whose
        labels differ from today's registered task still segments with its own labels."""
        definition = read_header(self.path).get("task_definition")
        if definition is None:  # written before checkpoints carried their task
            return get_task(self.task)
        return task_from_dict(definition, source=f"{self.path.name}'s task definition")


def split_version(text: str) -> tuple[str, int | None]:
    """``"NAME@K"`` -> ("NAME", K); ``"NAME"`` -> ("NAME", None). Parsed once, where a user
    typed it; raises UnknownTaskError for a version that is not a whole number from 1."""
    name, separator, number = text.partition(SEPARATOR)
    if not separator:
        return text, None
    if not re.fullmatch(r"[1-9][0-9]*", number):
        raise UnknownTaskError(
            f"{text!r}: a version is a whole number from 1 after '@', as in {name}@2"
        )
    return name, int(number)


def version_path(task_name: str, version: int) -> Path:
    """Where version ``version`` of ``task_name`` lives in the cache (it may not exist)."""
    stem = task_name if version == 1 else f"{task_name}{SEPARATOR}{version}"
    return models_dir() / f"{stem}.safetensors"


def _version_files(task_name: str) -> dict[int, Path]:
    """Every file named as a version of ``task_name``, readable or not, by version."""
    folder = models_dir()
    found = {1: folder / f"{task_name}.safetensors"}
    for path in folder.glob(f"{glob.escape(task_name)}{SEPARATOR}*.safetensors"):
        match = _VERSION_FILE.match(path.name)
        if match and match["task"] == task_name:
            found[int(match["version"])] = path
    return {k: found[k] for k in sorted(found) if found[k].is_file()}


def next_version(task_name: str) -> int:
    """One more than the highest version on disk: a damaged file still keeps its number, so a
    new import never takes the name of a file the user may want to inspect."""
    return max(_version_files(task_name), default=0) + 1


def model_versions(task_name: str) -> list[ModelVersion]:
    """The imported versions of a user task, oldest first.

    Files whose header cannot be read, or that hold another task's model, are left out:
    ``segresmamba models verify FILE`` names their problem.
    """
    versions = []
    for number, path in _version_files(task_name).items():
        try:
            header = read_header(path)
        except CheckpointError:
            continue
        if header["task"] == task_name:
            versions.append(_from_header(task_name, number, path, header))
    return versions


def _from_header(task_name: str, number: int, path: Path, header: dict[str, Any]) -> ModelVersion:
    """What training recorded in the header; older checkpoints lack "cases", and their case
    count is the length of the training split when they recorded it."""
    provenance = header.get("provenance") or {}
    cases = provenance.get("cases")
    if cases is None:
        split = provenance.get("split_cases")
        training = split.get("training") if isinstance(split, dict) else None
        cases = len(training) if isinstance(training, list) else None
    steps, dice, date = (provenance.get(key) for key in ("steps", "dice", "date"))
    return ModelVersion(
        task=task_name,
        version=number,
        path=path,
        cases=int(cases) if isinstance(cases, int) else None,
        steps=int(steps) if isinstance(steps, int) else None,
        dice=float(dice) if isinstance(dice, (int, float)) else None,
        date=str(date) if date else None,
    )


def get_version(task_name: str, version: int | None = None) -> ModelVersion:
    """Version ``version`` of a user task (None: the newest). Raises ModelNotAvailableError in
    one line listing the versions there are, so a typo shows what to type instead."""
    versions = model_versions(task_name)
    if not versions:
        raise ModelNotAvailableError(f"task {task_name} has no imported versions; {IMPORT_HINT}")
    if version is None:
        return versions[-1]
    for found in versions:
        if found.version == version:
            return found
    there = ", ".join(found.name for found in versions)
    raise ModelNotAvailableError(
        f"task {task_name} has no version {version}; its versions are {there}"
    )


def version_of(path: str | Path) -> ModelVersion | None:
    """Which version of a user task a cached checkpoint is (None: not a version)."""
    path = Path(path)
    for task in user_tasks():
        for found in model_versions(task.name):
            if found.path == path:
                return found
    return None


def task_version(name: str, version: int | None = None) -> tuple[Task, ModelVersion | None]:
    """The task to segment with and the version to use for ``-t NAME`` (newest) or NAME@K.

    The task comes from that version's own header. A built-in task, or a user task with no
    versions (imported before versions existed under another name), gives (task, None): the
    model registry decides then. Raises UnknownTaskError for an unknown task name and
    ModelNotAvailableError for a version that is not there.
    """
    task = get_task(name)
    own = task.name in {t.name for t in user_tasks()}
    if version is not None and not own:
        raise ModelNotAvailableError(
            f"task {task.name} is built in and has no versions; {task.name}@{version} names a "
            "version of a task of your own"
        )
    if not own or (version is None and not model_versions(task.name)):
        return task, None
    found = get_version(task.name, version)
    return found.task_definition(), found

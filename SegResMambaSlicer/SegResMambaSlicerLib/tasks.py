"""What the module shows about tasks and models, and which loaded volume feeds which input.

The task list must exist before the engine's dependencies are installed (the parameter node
declares the task choices when the module loads), so :func:`task_names` asks the engine's one
lookup, ``segresmamba.tasks.task_names``, which needs neither PyTorch nor jsonschema and sees the
built-in tasks and those of the user's imported models. Everything else comes from the engine's
own registries (``segresmamba.tasks``, ``segresmamba.weights``), imported only when called.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ModelStatus",
    "TrainingSet",
    "default_training_set",
    "is_built_in",
    "match_volumes",
    "model_status",
    "segmentation_task",
    "task_inputs_text",
    "task_names",
    "task_versions",
    "teach_task",
    "training_set",
]


def task_names() -> list[str]:
    """Task names, built-in then the user's own, from the engine without PyTorch; [] when the
    engine cannot be imported at all (the module then shows a placeholder)."""
    try:
        from segresmamba.tasks import task_names as engine_task_names
    except ImportError:
        return []
    return engine_task_names()


def task_inputs_text(task) -> str:
    """``Needs: CT (CT image in Hounsfield units)`` or the four BraTS sequences, for the UI."""
    parts = [f"{spec.name} ({spec.description})" for spec in task.inputs]
    return "Needs: " + "; ".join(parts)


def match_volumes(task, names: Sequence[str]) -> dict[str, int]:
    """Which loaded volume (index into ``names``) fills each of ``task``'s inputs.

    A single-input task takes the first volume. Multi-input tasks (BraTS) use each input's name
    patterns (t1c/t1ce/t1gd -> T1Gd, t1n/t1 -> T1, t2w/t2 -> T2, t2f/flair -> FLAIR): a volume
    whose name matches exactly one input goes to that input, the first such volume wins, and an
    input nothing matches is left out, for the user to pick. Never raises: this only pre-fills
    selectors the user can change.
    """
    if not names:
        return {}
    if len(task.inputs) == 1:
        return {task.inputs[0].name: 0}
    chosen: dict[str, int] = {}
    for index, name in enumerate(names):
        hits = [spec.name for spec in task.inputs if spec.matches(name)]
        if len(hits) == 1 and hits[0] not in chosen:
            chosen[hits[0]] = index
    return {spec.name: chosen[spec.name] for spec in task.inputs if spec.name in chosen}


@dataclass(frozen=True)
class ModelStatus:
    """The model line: which checkpoint a task would use and whether it is on this computer."""

    task: str
    name: str | None
    version: str | None
    path: Path | None
    downloadable: bool
    text: str

    @property
    def installed(self) -> bool:
        return self.path is not None


def model_status(task_name: str, model: str | None = None) -> ModelStatus:
    """What ``resolve_model`` would pick for ``task_name`` without downloading anything."""
    from segresmamba.errors import SegResMambaError
    from segresmamba.weights import list_models, resolve_model

    infos = [m for m in list_models() if m.task == task_name]
    info = next((m for m in infos if model and m.name == model), None)
    if info is None and not model:
        info = next((m for m in infos if m.default), infos[0] if infos else None)
    try:
        path = resolve_model(task_name, model or None, download=False, progress=False)
    except SegResMambaError as error:
        path, problem = None, " ".join(str(error).split())
    else:
        problem = ""
    name = info.name if info else Path(model or path or "").stem or None  # imported: its file
    version = info.version if info else None
    downloadable = bool(info and info.url and path is None)
    if path is not None:
        where = "bundled" if info and path == info.bundled_path() else "installed"
        label = f"{name} {version}" if version else str(name)
        text = f"{label} ({where})"
    elif downloadable:
        text = f"{name} {version}: not downloaded yet"
    else:
        text = problem or "no model"
    return ModelStatus(task_name, name, version, path, downloadable, text)


@dataclass(frozen=True)
class TrainingSet:
    """A training set folder as the *Teach* section shows it."""

    folder: Path
    task: str | None  # dataset.json's "name": the task its model will carry
    cases: int
    problem: str = ""  # why it cannot be read, in one line


def default_training_set(task_name: str) -> Path:
    """Where *Add to training set* writes by default: ``user_datasets_dir()/<task>``, or
    ``<task>-own`` for a built-in task (the engine's rule, ``default_dataset_dir``)."""
    from segresmamba.datasets.layout import default_dataset_dir

    return default_dataset_dir(task_name)


def training_set(folder: str | Path) -> TrainingSet:
    """What ``folder`` holds: none yet (no ``dataset.json``), its task name and case count, or
    the dataset reader's one-line problem."""
    from segresmamba.datasets import load_dataset
    from segresmamba.errors import SegResMambaError

    folder = Path(folder)
    if not (folder / "dataset.json").is_file():
        return TrainingSet(folder, None, 0)
    try:
        dataset = load_dataset(folder)
    except SegResMambaError as error:  # e.g. a damaged case: still say what the set holds
        name, cases = _peek(folder)
        return TrainingSet(folder, name, cases, " ".join(str(error).split()))
    return TrainingSet(folder, dataset.name, len(dataset.cases))


def _peek(folder: Path) -> tuple[str | None, int]:
    """The name in ``dataset.json`` and the number of label files, for a set the reader
    refuses; (None, 0) when ``dataset.json`` itself cannot be read."""
    import json

    try:
        data = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
        ending = str(data.get("file_ending") or ".nii.gz")
        name = str(data.get("name") or folder.name)
    except (OSError, ValueError, AttributeError):
        return None, 0
    labels = folder / "labelsTr"
    count = sum(1 for p in labels.iterdir() if p.name.endswith(ending)) if labels.is_dir() else 0
    return name, count


def teach_task(task, folder: str | Path):
    """What *Add to training set* writes ``task``'s case for (``task`` is the selected Task):
    the task itself in its default folder; the set's own task in a folder holding another
    task's set; and, in a new folder the user chose, a new task named after that folder, whose
    labels come from the segments."""
    from segresmamba.datasets.layout import own_task_name

    folder = Path(folder)
    found = training_set(folder)
    if found.task and found.task != own_task_name(task.name):
        return found.task
    if not found.task and not found.problem and folder != default_training_set(task.name):
        return folder.name
    return task


def is_built_in(task_name: str) -> bool:
    """Whether ``task_name`` is one of the engine's own tasks (no user versions)."""
    from segresmamba.tasks import builtin_tasks

    return task_name in {task.name for task in builtin_tasks()}


def task_versions(task_name: str | None) -> list:
    """The imported versions of a user task, oldest first ([] for any other name)."""
    if not task_name or is_built_in(task_name):
        return []
    from segresmamba.weights import model_versions

    return model_versions(task_name)


def segmentation_task(task_name: str, version: str = ""):
    """What Apply segments with: the task name (its newest model), or for an older version
    ``version`` ("K") that version's own task under the name ``NAME@K``, so the engine runs
    ``-t NAME@K`` and the result gets that version's labels."""
    if not version:
        return task_name
    import dataclasses

    from segresmamba.weights import get_version

    found = get_version(task_name, int(version))
    return dataclasses.replace(found.task_definition(), name=found.name)

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
    "match_volumes",
    "model_status",
    "task_inputs_text",
    "task_names",
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

"""Reading the task registry: the bundled ``tasks.json`` and the user's own tasks, both checked
against ``tasks.schema.json`` and then for what a schema cannot say (label values, colours,
channel names), and turned into :class:`~.types.Task` objects.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

from ..checked_json import read_checked_json, schema_problem
from ..errors import RegistryError, UnknownTaskError
from ..home import user_tasks_path
from .labelmap import Labelmap
from .types import InputSpec, Label, Task

__all__ = [
    "TASKS_JSON",
    "TASKS_SCHEMA_JSON",
    "builtin_tasks",
    "get_task",
    "list_tasks",
    "load_tasks",
    "task_from_dict",
    "task_names",
    "user_tasks",
]

TASKS_JSON = Path(__file__).with_name("tasks.json")
TASKS_SCHEMA_JSON = Path(__file__).with_name("tasks.schema.json")


IMPORT_HINT = (
    "a model trained on your own data brings its task: register it with "
    "`segresmamba models import FILE`"
)


def builtin_tasks() -> list[Task]:
    """The tasks of the bundled ``tasks.json``, in file order."""
    return load_tasks(TASKS_JSON)


def user_tasks() -> list[Task]:
    """The tasks registered by ``segresmamba models import``, in the order they came.

    Raises RegistryError naming the user file when it is invalid or a name clashes with a
    built-in task (only a hand edit can do that: import refuses such names).
    """
    path = user_tasks_path()
    if not path.is_file():
        return []
    tasks = load_tasks(path)
    builtin = {task.name for task in builtin_tasks()}
    clashes = sorted(task.name for task in tasks if task.name in builtin)
    if clashes:
        raise RegistryError(
            f"user task registry {path} redefines built-in task(s) {', '.join(clashes)}; "
            "remove them from that file"
        )
    return tasks


def list_tasks() -> list[Task]:
    """Every task: the built-in ones in file order, then the user's own."""
    return builtin_tasks() + user_tasks()


def task_names() -> list[str]:
    """Task names as :func:`list_tasks` orders them, read as plain JSON without validation.

    For front ends that must list tasks before the engine's dependencies are installed (the
    Slicer module declares its task choices when it loads); an unreadable file adds no names.
    """
    names: list[str] = []
    for path in (TASKS_JSON, user_tasks_path()):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            found = [str(task["name"]) for task in data["tasks"]]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        names += [name for name in found if name not in names]
    return names


def get_task(name: str | Task) -> Task:
    """The task called ``name`` (a Task is returned as is).

    Raises UnknownTaskError, listing the known names, for a name the registry does not know.
    """
    if isinstance(name, Task):
        return name
    tasks = list_tasks()
    for task in tasks:
        if task.name == name:
            return task
    known = ", ".join(task.name for task in tasks)
    raise UnknownTaskError(f"unknown task {name!r}; known tasks: {known}; {IMPORT_HINT}")


def load_tasks(path: str | Path = TASKS_JSON) -> list[Task]:
    """Read, validate and build the tasks of a registry file (fresh objects on every call).

    Raises RegistryError naming the file and the first problem when it does not validate.
    """
    path = Path(path)
    try:
        stat = path.stat()
    except OSError as error:
        raise RegistryError(f"task registry {path} cannot be read: {error.strerror}") from None
    data = copy.deepcopy(_validated(str(path), stat.st_mtime_ns, stat.st_size))
    return [_build_task(item) for item in data["tasks"]]


def task_from_dict(item: dict[str, Any], source: str = "task definition") -> Task:
    """Build one task from ``tasks.json``-shaped data that did not come from the bundled file.

    A model trained on a user's own dataset carries its task this way (in its plan and in its
    checkpoint header), so it is held to the same schema and rules as the bundled tasks.
    Raises RegistryError naming ``source`` and the first problem.
    """
    data = {"format_version": 1, "tasks": [copy.deepcopy(item)]}
    problem = schema_problem(data, TASKS_SCHEMA_JSON, skip=2)
    if problem is not None:
        where, message = problem
        raise RegistryError(f"{source} is invalid{' at ' + where if where else ''}: {message}")
    problems = _semantic_problems(data["tasks"][0])
    if problems:
        raise RegistryError(f"{source} is invalid: {'; '.join(problems)}")
    return _build_task(data["tasks"][0])


@functools.lru_cache(maxsize=8)
def _validated(path: str, _mtime_ns: int, _size: int) -> dict[str, Any]:
    """Parse and check one registry file; cached per path, modification time and size."""
    data = read_checked_json(path, TASKS_SCHEMA_JSON, "task registry")
    problems = [p for item in data["tasks"] for p in _semantic_problems(item)]
    names = [item["name"] for item in data["tasks"]]
    problems += [f"task name {n!r} is used twice" for n in sorted(set(names)) if names.count(n) > 1]
    if problems:
        raise RegistryError(f"task registry {path} is invalid: {'; '.join(problems)}")
    return data


def _semantic_problems(item: dict[str, Any]) -> list[str]:
    """What the schema cannot say: label values, channel order, widths, labelmap rules."""
    name, labels = item["name"], item["labels"]
    problems = []
    values = [label["value"] for label in labels]
    first = 0 if item["output"] == "softmax" else 1
    if values != list(range(first, first + len(values))):
        problems.append(
            f"{name}: label values must run {first}, {first + 1}, ... in channel order; got {values}"
        )
    if item["output"] == "softmax" and labels[0]["name"] != "background":
        problems.append(f"{name}: softmax label 0 must be background")
    if item["output"] == "sigmoid" and "labelmap" not in item:
        problems.append(f"{name}: sigmoid tasks need labelmap rules")
    input_names = [spec["name"] for spec in item["inputs"]]
    if item["intensity"].get("kind") == "per_channel":
        rules = item["intensity"]["channels"]
        if len(rules) != len(input_names):
            problems.append(
                f"{name}: per_channel intensity needs one rule per input ({len(input_names)}); "
                f"got {len(rules)}"
            )
        elif any(r.get("name", n) != n for r, n in zip(rules, input_names)):
            named = [r.get("name") for r in rules]
            problems.append(
                f"{name}: per_channel intensity rules are named {named}, inputs {input_names}"
            )
    if len(set(input_names)) != len(input_names):
        problems.append(f"{name}: input names must be unique; got {input_names}")
    widths = item["network"].get("widths")
    if widths and any(b != 2 * a for a, b in zip(widths, widths[1:])):
        problems.append(f"{name}: network widths must each be twice the last; got {widths}")
    if "labelmap" in item:
        regions = tuple(label.get("abbreviation", "") for label in labels)
        problems += Labelmap.from_dict(item["labelmap"], regions).check(name)
    return problems


def _build_task(item: dict[str, Any]) -> Task:
    labels = tuple(Label.from_dict(label) for label in item["labels"])
    labelmap = None
    if "labelmap" in item:
        regions = tuple(label.abbreviation or "" for label in labels)
        labelmap = Labelmap.from_dict(item["labelmap"], regions)
    return Task(
        name=item["name"],
        title=item["title"],
        description=item["description"],
        modality=item["modality"],
        inputs=tuple(
            InputSpec(s["name"], s["description"], tuple(s["name_patterns"]))
            for s in item["inputs"]
        ),
        output=item["output"],
        labels=labels,
        spacing_mm=tuple(float(v) for v in item["spacing_mm"]),  # type: ignore[arg-type]
        fast_spacing_mm=tuple(float(v) for v in item["fast_spacing_mm"]),  # type: ignore[arg-type]
        patch_size=tuple(int(v) for v in item["patch_size"]),  # type: ignore[arg-type]
        intensity=dict(item["intensity"]),
        network=dict(item["network"]),
        labelmap=labelmap,
        dataset=item.get("dataset", ""),
    )

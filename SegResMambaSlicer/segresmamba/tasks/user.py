"""Registering the task of a user's own model in the per-user ``tasks.json``.

A model trained on a user's dataset carries its whole task in its checkpoint header
(``task_definition``). ``segresmamba models import`` registers it here so that the command line
and the Slicer module know the task with nothing else configured. The bundled ``tasks.json`` is
never edited and a user task never takes a built-in task's name. Each import of a model of a
user task is a new version of it (``segresmamba.weights.versions``); the task registered here
is the newest version's, which may differ from an older one's (a label added by fine-tuning).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import RegistryError
from ..home import user_tasks_path
from ..io.atomic import land, temporary_beside
from . import Task, builtin_tasks, load_tasks, user_tasks

__all__ = ["check_registrable", "register_task", "same_task"]


def same_task(a: Task, b: Task) -> bool:
    """Whether two definitions describe the same network contract: name, inputs in channel
    order, output kind and labels (value, name). Colours or texts may differ."""
    return (
        a.name == b.name
        and [s.name for s in a.inputs] == [s.name for s in b.inputs]
        and a.output == b.output
        and [(x.value, x.name) for x in a.labels] == [(x.value, x.name) for x in b.labels]
    )


def check_registrable(task: Task, overwrite: bool = False, source: str = "checkpoint") -> bool:
    """Whether registering ``task`` changes the user registry (False: already there as is).

    Raises RegistryError when the name is a built-in task's, or a different user task of that
    name exists and ``overwrite`` is not set. Writes nothing.
    """
    for builtin in builtin_tasks():
        if builtin.name == task.name:
            raise RegistryError(
                f"{source} defines task {task.name!r}, which is the name of a built-in task; "
                "a task of your own needs a name of its own (set another task name when "
                "planning and train again)"
            )
    for existing in user_tasks():
        if existing.name == task.name:
            if existing.to_dict() == task.to_dict():
                return False
            if not overwrite:
                raise RegistryError(
                    f"{source} defines task {task.name!r}, which an earlier import registered "
                    "with another definition; pass overwrite=True to replace it"
                )
    return True


def register_task(task: Task, overwrite: bool = False, source: str = "checkpoint") -> Path:
    """Add (or, with ``overwrite``, replace) ``task`` in the user ``tasks.json``, atomically.

    Returns the file's path. Raises RegistryError as :func:`check_registrable` does.
    """
    path = user_tasks_path()
    if not check_registrable(task, overwrite, source):
        return path
    items = [t.to_dict() for t in user_tasks() if t.name != task.name] + [task.to_dict()]
    with temporary_beside(path) as temporary:
        text = json.dumps({"format_version": 1, "tasks": items}, indent=2) + "\n"
        temporary.write_text(text, encoding="utf-8")
        load_tasks(temporary)  # the readers' own checks, before it replaces anything
        land(temporary, path)
    return path

"""The task registry: ``tasks.json`` (checked against ``tasks.schema.json``) as Task objects.

One data file says, for every task, which images go in, in which channel order, what comes out,
the colours and SNOMED CT codes of each label, the preprocessing and the network size. Training,
inference, the CLI and the Slicer module all read it from here, so they cannot disagree.

Tasks of the user's own models (``segresmamba models import``) live in a second file of the same
shape in the per-user folder (:func:`segresmamba.home.user_tasks_path`); the bundled file is never
edited. :func:`list_tasks` and :func:`get_task` see both, built-in tasks first.
"""

from __future__ import annotations

from .labelmap import CONVENTIONS, Labelmap, LabelmapLabel
from .registry import (
    TASKS_JSON,
    TASKS_SCHEMA_JSON,
    builtin_tasks,
    get_task,
    list_tasks,
    load_tasks,
    task_from_dict,
    task_names,
    user_tasks,
)
from .types import Code, InputSpec, Label, Task, Terminology, image_stem

__all__ = [
    "CONVENTIONS",
    "TASKS_JSON",
    "TASKS_SCHEMA_JSON",
    "builtin_tasks",
    "Code",
    "InputSpec",
    "Label",
    "Labelmap",
    "LabelmapLabel",
    "Task",
    "Terminology",
    "get_task",
    "image_stem",
    "list_tasks",
    "load_tasks",
    "task_from_dict",
    "task_names",
    "user_tasks",
]

"""What a dataset folder is, or will be once its first case is added: channels, labels, file
ending, the ``ignore`` value, and the ``dataset.json`` that says so.

An existing folder's ``dataset.json`` rules (its channels and labels are never changed; only
``numTraining`` and, when first needed, an ``ignore`` label are added). A new folder takes its
labels, colours and codes from the task it is made for, or else from the user's segments; a
model trained on it then carries them (``training/own_task.py`` reads ``colors`` and
``terminology``). A built-in task's name is never reused: the dataset of a user's own cases for
``btcv`` is ``btcv-own``, so the model it trains has a name of its own.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..home import user_datasets_dir
from ..tasks import builtin_tasks
from ..tasks.matching import canonical_sequence
from ..tasks.types import Terminology
from .folder import IGNORE, DatasetError, _parse, _read_json
from .labels import LabelSource, TargetLabel, targets_from_segments, targets_from_task

__all__ = [
    "Layout",
    "default_dataset_dir",
    "existing_layout",
    "new_layout",
    "own_task_name",
    "same_channel",
]

NEW_FILE_ENDING = ".nii.gz"


@dataclass
class Layout:
    """A dataset's shape; ``data`` is the ``dataset.json`` content to write."""

    folder: Path
    data: dict[str, Any]
    channel_names: tuple[str, ...]
    targets: list[TargetLabel]
    file_ending: str
    region_based: bool
    ignore: int | None
    new: bool

    def ignore_value(self) -> int:
        """The ``ignore`` label's value, added to ``data`` (the highest value) when missing."""
        if self.ignore is None:
            values = [v for t in self.targets for v in _values(t.value)]
            self.ignore = max(values) + 1
            if self.ignore > 255:
                raise DatasetError(f"{self.folder}: no 8-bit value is left for the ignore label")
            self.data["labels"][IGNORE] = self.ignore
        return self.ignore


def _values(value: int | tuple[int, ...]) -> tuple[int, ...]:
    return value if isinstance(value, tuple) else (value,)


def own_task_name(task: Any) -> str:
    """The name of the dataset (and of the model it trains) for ``task``'s own cases: the
    task's name, or ``<task>-own`` for a built-in task (its name belongs to its published model)."""
    name = task if isinstance(task, str) else task.name
    return f"{name}-own" if name in {t.name for t in builtin_tasks()} else name


def default_dataset_dir(task: Any) -> Path:
    """``$SEGRESMAMBA_HOME/datasets/<own task name>``: where *Add to training set* writes."""
    return user_datasets_dir() / own_task_name(task)


def _channel_key(name: str) -> str:
    return canonical_sequence(name) or re.sub(r"[^a-z0-9]", "", name.lower())


def same_channel(a: str, b: str) -> bool:
    """Whether two channel names mean the same image: equal but for case and punctuation
    (``T1 post`` and ``T1_post``), or the same MRI sequence (``t1ce`` and ``T1Gd``)."""
    return _channel_key(a) == _channel_key(b)


def _terminology(raw: Any) -> Terminology | None:
    try:
        return Terminology.from_dict(raw) if isinstance(raw, dict) else None
    except (KeyError, TypeError):
        return None


def _color(raw: Any) -> tuple[float, float, float] | None:
    if isinstance(raw, list) and len(raw) == 3 and all(isinstance(c, (int, float)) for c in raw):
        return tuple(float(c) for c in raw)  # type: ignore[return-value]
    return None


def existing_layout(folder: Path) -> Layout | None:
    """The layout ``folder/dataset.json`` describes; None when there is none yet. Raises
    DatasetError (naming the file) for a malformed one."""
    if not (folder / "dataset.json").is_file():
        return None
    data = _read_json(folder)
    names, labels, ending, regions, ignore = _parse(folder, data)
    colors, codes = data.get("colors") or {}, data.get("terminology") or {}
    targets, foreground = [], 0
    for name, value in labels.items():
        paint = value if isinstance(value, int) else 0
        if name != "background" and regions is not None:
            paint, foreground = regions[foreground], foreground + 1
        targets.append(
            TargetLabel(name, value, paint, _color(colors.get(name)), _terminology(codes.get(name)))
        )
    return Layout(folder, data, names, targets, ending, regions is not None, ignore, new=False)


def _label_json(targets: Sequence[TargetLabel]) -> dict[str, Any]:
    labels = {t.name: (list(t.value) if isinstance(t.value, tuple) else t.value) for t in targets}
    out: dict[str, Any] = {"labels": labels}
    if any(isinstance(t.value, tuple) for t in targets):
        out["regions_class_order"] = [t.paint for t in targets if t.value != 0]
    colors = {t.name: [round(c, 4) for c in t.color] for t in targets[1:] if t.color}
    codes = {t.name: t.terminology.to_dict() for t in targets[1:] if t.terminology}
    if colors:
        out["colors"] = colors
    if codes:
        out["terminology"] = codes
    return out


def new_layout(
    folder: Path,
    channel_names: Sequence[str],
    source: LabelSource,
    task: Any = None,
    name: str | None = None,
) -> Layout:
    """The layout of a dataset created by its first case: channels as given, labels from
    ``task`` or else from the segments of ``source``; named ``name``, else after the task
    (:func:`own_task_name`) or the folder. A plain labelmap without a task is refused: nothing
    would name its labels."""
    if task is not None:
        targets = targets_from_task(task)
        name = name or own_task_name(task)
        description = f"The user's own cases for task {task.name} ({task.title})"
    elif source.segments is not None:
        targets = targets_from_segments(source.segments)
        name = name or folder.name
        description = "The user's own cases, labelled in 3D Slicer"
    else:
        raise DatasetError(
            f"labels {source.source} are a plain labelmap and dataset {folder} is new: nothing "
            "names its labels; give a .seg.nrrd with named segments, or --task NAME"
        )
    label_json = _label_json(targets)
    data: dict[str, Any] = {
        "name": name,
        "description": description,
        "channel_names": {str(i): str(c) for i, c in enumerate(channel_names)},
        "labels": label_json.pop("labels"),
        **({"regions_class_order": label_json.pop("regions_class_order")}
           if "regions_class_order" in label_json else {}),
        "numTraining": 0,
        "file_ending": NEW_FILE_ENDING,
        **label_json,
    }  # fmt: skip
    region_based = "regions_class_order" in data
    return Layout(
        folder, data, tuple(channel_names), targets, NEW_FILE_ENDING, region_based, None, new=True
    )

"""A dataset (and its plan) as a task in ``tasks.json`` shape, so a trained model describes itself.

The task dict is what the checkpoint header carries (``task_definition``) and what
``segresmamba models import`` registers: inputs named after the channels, labels named after
``dataset.json`` (colours from a fixed palette unless ``dataset.json`` has a ``colors`` object,
terminology codes when it has a ``terminology`` object, else a generic code), and for
region-based datasets (``regions_class_order``) a sigmoid task with labelmap rules.
"""

from __future__ import annotations

import re
from typing import Any

from segresmamba.datasets import OwnDataset

__all__ = ["PALETTE", "dataset_labels", "input_name", "task_dict", "task_name"]

PALETTE = (
    (0.863, 0.235, 0.196),
    (0.314, 0.745, 0.353),
    (1.0, 0.843, 0.118),
    (0.267, 0.467, 0.878),
    (0.78, 0.396, 0.82),
    (0.129, 0.784, 0.796),
    (0.965, 0.553, 0.204),
    (0.541, 0.31, 0.161),
    (0.992, 0.631, 0.757),
    (0.6, 0.6, 0.6),
    (0.718, 0.847, 0.298),
    (0.384, 0.22, 0.596),
)
"""Label colours in value order when ``dataset.json`` gives none (repeats past 12 labels)."""

BACKGROUND_TERMINOLOGY = {
    "category": {
        "scheme": "SCT",
        "value": "309825002",
        "meaning": "Spatial and Relational Concept",
    },
    "type": {"scheme": "DCM", "value": "125040", "meaning": "Background"},
}
GENERIC_TERMINOLOGY = {
    "category": {"scheme": "SCT", "value": "85756007", "meaning": "Tissue"},
    "type": {"scheme": "SCT", "value": "85756007", "meaning": "Tissue"},
}
"""The code a label gets when ``dataset.json`` names none (Slicer's generic "Tissue")."""


def task_name(dataset: OwnDataset) -> str:
    """A registry name from the dataset name: lower case, [a-z0-9_-], starting with a letter."""
    name = re.sub(r"[^a-z0-9_-]+", "-", dataset.name.lower()).strip("-_") or "dataset"
    return name if name[0].isalpha() else f"d{name}"


def input_name(name: str, index: int) -> str:
    """The task's input name for channel ``index`` called ``name`` (letters, digits, _)."""
    clean = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_")
    return clean if clean[:1].isalpha() else f"channel{index}_{clean}".rstrip("_")


def _abbreviation(name: str, taken: set[str]) -> str:
    words = re.findall(r"[A-Za-z0-9]+", name)
    text = "".join(w[:1].upper() + w[1:] for w in words) or "Region"
    text = text if text[0].isalpha() else f"R{text}"
    base, number = text, 2
    while text in taken:
        text, number = f"{base}{number}", number + 1
    taken.add(text)
    return text


def _color(dataset: OwnDataset, name: str, index: int) -> list[float]:
    given = dataset.extra.get("colors", {}).get(name)
    if isinstance(given, list) and len(given) == 3:
        scale = 255.0 if max(given) > 1 else 1.0
        return [round(float(c) / scale, 4) for c in given]
    return list(PALETTE[index % len(PALETTE)])


def _terminology(dataset: OwnDataset, name: str) -> dict[str, Any]:
    given = dataset.extra.get("terminology", {}).get(name)
    return given if isinstance(given, dict) else GENERIC_TERMINOLOGY


def dataset_labels(dataset: OwnDataset) -> tuple[list[dict], dict | None]:
    """(the task's labels, its labelmap for region-based datasets, else None)."""
    foreground = [(n, v) for n, v in dataset.labels.items() if n != "background"]
    if not dataset.region_based:
        labels = [
            {"value": 0, "name": "background", "color": [0.0, 0.0, 0.0]}
            | {"terminology": BACKGROUND_TERMINOLOGY}
        ]
        for name, value in sorted(foreground, key=lambda item: item[1]):
            labels.append(
                {
                    "value": int(value),  # type: ignore[arg-type]
                    "name": name,
                    "color": _color(dataset, name, int(value) - 1),  # type: ignore[arg-type]
                    "terminology": _terminology(dataset, name),
                }
            )
        return labels, None
    taken: set[str] = set()
    labels, regions, paint = [], {}, []
    order = dataset.regions_class_order or ()
    for index, ((name, value), paint_value) in enumerate(zip(foreground, order)):
        abbreviation = _abbreviation(name, taken)
        covered = list(value) if isinstance(value, tuple) else [int(value)]
        labels.append(
            {
                "value": index + 1,
                "name": name,
                "abbreviation": abbreviation,
                "color": _color(dataset, name, index),
                "terminology": _terminology(dataset, name),
            }
        )
        regions[abbreviation] = covered
        paint.append({"region": abbreviation, "value": int(paint_value)})
    values = sorted(dataset.label_values() - {0, dataset.ignore_value})
    labelmap = {
        "labels": [
            {
                "value": v,
                "value_2021": v,
                "name": f"label {v}",
                "abbreviation": _abbreviation(f"L{v}", taken),
                "color": list(PALETTE[(v - 1) % len(PALETTE)]),
                "terminology": GENERIC_TERMINOLOGY,
            }
            for v in values
        ],
        "regions": regions,
        "paint_order": paint,
    }
    return labels, labelmap


def task_dict(
    dataset: OwnDataset,
    modality: str,
    spacing_mm: list[float],
    fast_spacing_mm: list[float],
    patch_size: list[int],
    intensity: dict[str, Any],
    widths: list[int],
    name: str | None = None,
) -> dict[str, Any]:
    """The task of a dataset and its plan, in ``tasks.json`` shape (check with task_from_dict)."""
    labels, labelmap = dataset_labels(dataset)
    item: dict[str, Any] = {
        "name": name or task_name(dataset),
        "title": dataset.name[:60],
        "description": (dataset.description or f"trained on {dataset.name}")[:200],
        "dataset": dataset.name,
        "modality": modality,
        "inputs": [
            {
                "name": input_name(channel, index),
                "description": f"channel {index} ({channel}) of {dataset.name}",
                "name_patterns": [
                    rf"_{index:04d}$",
                    rf"(^|[^a-z0-9]){re.escape(channel.lower())}($|[^a-z0-9])",
                ],
            }
            for index, channel in enumerate(dataset.channel_names)
        ],
        "output": "sigmoid" if dataset.region_based else "softmax",
        "labels": labels,
        "spacing_mm": [round(float(s), 4) for s in spacing_mm],
        "fast_spacing_mm": [round(float(s), 4) for s in fast_spacing_mm],
        "patch_size": [int(p) for p in patch_size],
        "intensity": intensity,
        "network": {"widths": [int(w) for w in widths]},
    }
    if labelmap is not None:
        item["labelmap"] = labelmap
    return item

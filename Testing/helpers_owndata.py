"""A model of the user's own data, built for real: a task for the two-channel BraTS 2013 nnU-Net
dataset in ``../shared/data/brats2013-2ch`` (label names read from its ``dataset.json``) and a
tiny SegResMamba checkpoint whose header carries that task, as training writes it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from segresmamba.network import SegResMamba
from segresmamba.tasks import task_from_dict
from segresmamba.weights import make_header, save_checkpoint

OWN_TASK = "brats2013-2ch"
TINY_WIDTHS = (8, 16, 32, 64)
PALETTE = [(0.0, 0.0, 0.0), (0.9, 0.3, 0.2), (0.3, 0.75, 0.35), (0.2, 0.45, 0.9), (1.0, 0.85, 0.1)]
GENERIC = {
    "category": {"scheme": "SCT", "value": "85756007", "meaning": "Tissue"},
    "type": {"scheme": "SCT", "value": "85756007", "meaning": "Tissue"},
}


def own_task_dict(dataset: Path, name: str = OWN_TASK) -> dict[str, Any]:
    """The task a plan of ``dataset`` describes: its channels in order, its labels by value."""
    info = json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))
    channels = [info["channel_names"][key] for key in sorted(info["channel_names"], key=int)]
    labels = sorted(info["labels"].items(), key=lambda item: item[1])
    return {
        "name": name,
        "title": "BraTS 2013, FLAIR + T1Gd (own data)",
        "description": "Glioma labels trained on the user's own nnU-Net dataset",
        "dataset": info["name"],
        "modality": "MR",
        "inputs": [
            {"name": c, "description": f"channel {i} of {info['name']}", "name_patterns": []}
            for i, c in enumerate(channels)
        ],
        "output": "softmax",
        "labels": [
            {"value": value, "name": label, "color": list(PALETTE[value]), "terminology": GENERIC}
            for label, value in labels
        ],
        "spacing_mm": [3.0, 3.0, 3.0],
        "fast_spacing_mm": [6.0, 6.0, 6.0],
        "patch_size": [64, 64, 64],
        "intensity": {"kind": "zscore_nonzero"},
        "network": {"widths": list(TINY_WIDTHS)},
    }


def own_checkpoint(path: Path, dataset: Path, seed: int = 0, name: str = OWN_TASK) -> Path:
    """An untrained tiny network for the own task, saved with the header training writes."""
    task = task_from_dict(own_task_dict(dataset, name), source="test task")
    torch.manual_seed(seed)
    model = SegResMamba(task.in_channels, task.out_channels, widths=TINY_WIDTHS)
    provenance = {"dataset": task.dataset, "split": {"fold": 0, "seed": 0}, "steps": 0}
    header = make_header(task, {"widths": list(TINY_WIDTHS)}, provenance)
    return save_checkpoint(path, model, header)

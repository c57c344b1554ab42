"""``training.train --dataset``: what the loop needs from a user's dataset and its plan.

The loop in ``training.loop`` is the same for every task; this module turns a dataset folder
(checked, and planned first when no ``--plan`` is given) into the task, the recipe, the fold's
training and validation cases, and the network (SegResMamba, or MONAI's SegResNet as a peer).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from segresmamba.datasets import OwnDataset, check_cases, load_dataset
from segresmamba.errors import SegResMambaError
from segresmamba.network import SegResMamba
from segresmamba.tasks import Task, task_from_dict

from .plan import make_plan, read_plan, write_plan
from .recipes import Recipe

__all__ = ["MODELS", "build_model", "own_setup", "own_split", "save_peer"]

MODELS = ("segresmamba", "segresnet")
PLAN_NAME = "plan.json"


def own_setup(
    args: argparse.Namespace, device: torch.device, main: bool
) -> tuple[Task, Recipe, dict[str, Any], OwnDataset]:
    """Check the dataset, plan it (or read ``--plan``), and build the task and recipe.

    The plan used is kept in the run folder as ``plan.json`` (written by the main process).
    """
    dataset = load_dataset(args.dataset)
    check_cases(dataset)  # refused here, before any training starts
    out = Path(args.out)
    if args.plan:
        plan = read_plan(args.plan)
        known = {case.case_id for case in dataset.cases}
        missing = sorted(set(plan["folds"]["case_fold"]) - known)
        if missing:
            raise SegResMambaError(
                f"plan {args.plan} lists case(s) {missing} that {dataset.folder} does not hold"
            )
    else:
        kind = "cuda" if device.type == "cuda" else "cpu"
        plan = make_plan(dataset, device=kind, memory_gb=args.memory_gb, seed=args.seed)
    # Command-line overrides go into the plan's task, so the checkpoint's task says what ran.
    if args.network:
        plan["task"]["network"] = {**plan["task"]["network"], **args.network}
    if args.patch_size:
        plan["task"]["patch_size"] = list(args.patch_size)
    if main:
        write_plan(plan, out / PLAN_NAME)
    task = task_from_dict(plan["task"], f"the task in plan {args.plan or out / PLAN_NAME}")
    t = plan["training"]
    recipe = Recipe(
        steps=int(t["steps"]),
        learning_rate=float(t["learning_rate"]),
        weight_decay=float(t["weight_decay"]),
        loss=str(t["loss"]),
        batch_size=int(t["batch_size"]),
        samples_per_volume=int(t["samples_per_volume"]),
        crop_foreground=bool(t["crop_foreground"]),
        crop=str(t["crop"]),
        pos=float(t.get("pos", 1)),
        neg=float(t.get("neg", 1)),
        flip_prob=float(t["flip_prob"]),
        rotate90_prob=float(t["rotate90_prob"]),
        intensity_shift=float(t["intensity_shift"]),
        intensity_shift_prob=float(t["intensity_shift_prob"]),
        intensity_scale=float(t["intensity_scale"]),
        intensity_scale_prob=float(t["intensity_scale_prob"]),
        val_every=int(t["val_every"]),
        source=f"training.plan for {dataset.name} ({args.plan or 'planned at start'})",
    )
    return task, recipe, plan, dataset


def own_split(
    plan: dict[str, Any], dataset: OwnDataset, fold: int
) -> tuple[list[dict], list[dict], dict[str, Any]]:
    """(training entries, validation entries, summary) of ``fold`` of the plan's split."""
    case_fold = plan["folds"]["case_fold"]
    folds = sorted(set(case_fold.values()))
    if fold not in folds:
        raise SegResMambaError(f"fold {fold} is not in the plan (folds {folds})")
    entries = [c.as_entry() for c in dataset.cases if c.case_id in case_fold]
    training = [e for e in entries if case_fold[e["case"]] != fold]
    validation = [e for e in entries if case_fold[e["case"]] == fold]
    split = (
        f"{plan['folds']['count']} folds (seed {plan['folds']['seed']}); validation fold {fold}: "
        + ", ".join(e["case"] for e in validation)
    )
    summary = {
        "datalist": str(dataset.folder),
        "split": split,
        "training_cases": len(training),
        "validation_cases": len(validation),
        "dataset": dataset.name,
        "training_case_ids": [e["case"] for e in training],
        "validation_case_ids": [e["case"] for e in validation],
    }
    return training, validation, summary


def build_model(name: str, task: Task, network: dict[str, Any]) -> nn.Module:
    """SegResMamba with the task's network, or MONAI SegResNet with the same first width."""
    if name == "segresnet":
        from monai.networks.nets import SegResNet

        return SegResNet(
            spatial_dims=3,
            init_filters=int(network["widths"][0]),
            in_channels=task.in_channels,
            out_channels=task.out_channels,
        )
    return SegResMamba(**{**task.network_kwargs(), **network})


def save_peer(path: Path, model: nn.Module, task: Task, provenance: dict[str, Any]) -> Path:
    """A SegResNet checkpoint (safetensors, task and provenance in the metadata) for the
    benchmark; the engine loads SegResMamba checkpoints only, so this one is not importable."""
    model = getattr(model, "module", model)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "network": "monai.networks.nets.SegResNet",
        "task_definition": json.dumps(task.to_dict()),
        "provenance": json.dumps(provenance),
    }
    temporary = path.with_name(f".{path.name}.tmp")
    safetensors.torch.save_file(tensors, str(temporary), metadata=metadata)
    temporary.replace(path)
    return path

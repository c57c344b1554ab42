"""``training.train --dataset``: what the loop needs from a user's dataset and its plan.

The loop in ``training.loop`` is the same for every task; this module turns a dataset folder
(checked, and planned first when no ``--plan`` is given; with ``--init-from``, the model's own
plan, see ``training.finetune``) into the task, the recipe, the fold's training and validation
cases, and the network (SegResMamba, or MONAI's SegResNet as a peer).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from segresmamba.datasets import DatasetError, OwnDataset, check_cases, load_dataset
from segresmamba.errors import SegResMambaError
from segresmamba.io.atomic import land, temporary_beside
from segresmamba.network import SegResMamba
from segresmamba.tasks import Task, task_from_dict

from .finetune import (
    SEGRESNET,
    Parent,
    check_channels,
    finetune_plan,
    load_parent_weights,
    read_parent,
)
from .plan import check_own_name, make_plan, read_plan, warn_count
from .recipes import Recipe

__all__ = [
    "MODELS",
    "PLAN_NAME",
    "OwnRun",
    "build_model",
    "own_model",
    "own_setup",
    "own_split",
    "plan_recipe",
    "resume_plan",
    "with_overrides",
    "save_peer",
]

MODELS = ("segresmamba", "segresnet")
PLAN_NAME = "plan.json"


@dataclass
class OwnRun:
    """What a run on a user's dataset trains: the task, its recipe, the plan (written to the run
    folder and into the best checkpoint's header), the dataset, and with ``--init-from`` the
    model it starts from and the lines saying what was decided for it."""

    task: Task
    recipe: Recipe
    plan: dict[str, Any]
    dataset: OwnDataset
    parent: Parent | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def relabel(self) -> bool:
        """Whether the output layer starts afresh: the dataset's labels are not the parent's."""
        return self.parent is not None and not self.parent.same_labels(self.plan["task"])


def own_setup(args: argparse.Namespace, device: torch.device) -> OwnRun:
    """Check the dataset, plan it (or read ``--plan``, or take ``--init-from``'s plan), and
    build the task and recipe. Nothing is written: every refusal comes before the run starts."""
    dataset = load_dataset(args.dataset)
    kind = "cuda" if device.type == "cuda" else "cpu"
    parent = None
    if getattr(args, "init_from", None):
        parent = read_parent(args.init_from, args.model)
        check_channels(parent, dataset)  # refused before a single case is read
    check_cases(dataset)  # refused here, before any training starts
    warn_count(dataset)
    notes: list[str] = []

    def fresh() -> dict[str, Any]:
        return make_plan(dataset, device=kind, memory_gb=args.memory_gb, seed=args.seed)

    own_plan = Path(args.out) / PLAN_NAME
    if getattr(args, "resume", False) and own_plan.is_file():
        plan = resume_plan(own_plan, args)  # never re-planned: the run's plan goes on
        if parent is not None:
            _, notes = finetune_plan(parent, dataset, kind, fresh)
    elif parent is not None:
        plan, notes = finetune_plan(parent, dataset, kind, fresh)
    elif args.plan:
        plan = read_plan(args.plan)
    else:
        plan = fresh()
    known = {case.case_id for case in dataset.cases}
    missing = sorted(set(plan["folds"]["case_fold"]) - known)
    if missing:
        raise DatasetError(
            f"plan {args.plan or own_plan} lists case(s) {missing} that {dataset.folder} does "
            "not hold"
        )
    plan = with_overrides(plan, args)
    where = args.plan or (f"--init-from {args.init_from}" if parent else "planned at start")
    try:
        task = task_from_dict(plan["task"], f"the task of the plan ({where})")
    except SegResMambaError as error:  # a hand-edited plan: bad input, not a model problem
        raise DatasetError(str(error)) from None
    if parent is None:  # a fine-tune keeps its model's name (a version of that task)
        check_own_name(task.name, f"the plan ({where})")
    try:
        recipe = plan_recipe(
            plan, f"training.plan for {dataset.name} ({where})", parent is not None
        )
    except (KeyError, TypeError, ValueError) as error:  # a hand-edited value or a lost key
        raise DatasetError(
            f"the plan ({where}) has an unusable 'training' or 'finetune' section: "
            f"{type(error).__name__} {error}"
        ) from None
    return OwnRun(task, recipe, plan, dataset, parent, notes)


def with_overrides(plan: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The plan with ``--network`` and ``--patch-size`` written into its task, so the
    checkpoint's task (and the run's plan.json) says what ran."""
    if args.network:
        plan["task"]["network"] = {**plan["task"]["network"], **args.network}
    if args.patch_size:
        plan["task"]["patch_size"] = list(args.patch_size)
    return plan


def resume_plan(own_plan: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The plan a resumed run continues with: its own ``plan.json``. A ``--plan`` that differs
    from it is refused (the checkpoint would claim a plan its weights were not trained with)."""
    plan = read_plan(own_plan)
    if args.plan and with_overrides(read_plan(args.plan), args) != plan:
        raise DatasetError(
            f"--plan {args.plan} differs from the run's own {own_plan}; --resume continues with "
            "the run's plan: leave --plan out, or train the edited plan in a new --out folder"
        )
    return plan


def plan_recipe(plan: dict[str, Any], source: str, finetune: bool = False) -> Recipe:
    """The plan's ``training`` section as a Recipe; a fine-tune takes its length, learning rate
    and validation interval from the ``finetune`` section instead."""
    t = plan["training"]
    steps, rate, every = int(t["steps"]), float(t["learning_rate"]), int(t["val_every"])
    if finetune:
        f = plan["finetune"]
        steps, rate, every = int(f["steps"]), float(f["learning_rate"]), int(f["val_every"])
        source += f"; finetune: {steps} steps at learning rate {rate:g}"
    return Recipe(
        steps=steps,
        learning_rate=rate,
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
        val_every=every,
        source=source,
    )


def own_split(
    plan: dict[str, Any], dataset: OwnDataset, fold: int | str
) -> tuple[list[dict], list[dict], dict[str, Any]]:
    """(training entries, validation entries, summary) of ``fold`` of the plan's split.

    ``fold="all"``: every case trains and validation runs on the training cases, which says
    how well the model fits them, not how it does on new ones (the Slicer module's choice: a
    user with three labelled cases wants all three taught).
    """
    case_fold = plan["folds"]["case_fold"]
    entries = [c.as_entry() for c in dataset.cases if c.case_id in case_fold]
    if fold == "all":
        training, validation = entries, entries
        split = f"all {len(entries)} cases train (--fold all); validation on the training cases"
    else:
        folds = sorted(set(case_fold.values()))
        if fold not in folds:
            raise SegResMambaError(f"fold {fold} is not in the plan (folds {folds})")
        training = [e for e in entries if case_fold[e["case"]] != fold]
        validation = [e for e in entries if case_fold[e["case"]] == fold]
        if not training:  # e.g. a user's first case: nothing is left once it validates
            raise DatasetError(
                f"{dataset.folder}: fold {fold} leaves no case to train on ({len(entries)} "
                "case(s)); train on every case with --fold all"
            )
        split = (
            f"{plan['folds']['count']} folds (seed {plan['folds']['seed']}); validation fold "
            f"{fold}: " + ", ".join(e["case"] for e in validation)
        )
    summary = {
        "datalist": str(dataset.folder),
        "split": split,
        "training_cases": len(training),
        "validation_cases": len(validation),
        "validation_on": "training cases" if fold == "all" else "validation",
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


def own_model(run: OwnRun, name: str, network: dict[str, Any]) -> nn.Module:
    """The network to train, holding ``--init-from``'s weights when there is a parent (its
    output layer left as built when the labels differ)."""
    model = build_model(name, run.task, network)
    if run.parent is not None:
        load_parent_weights(model, run.parent, run.relabel)
    return model


def save_peer(
    path: Path,
    model: nn.Module,
    task: Task,
    provenance: dict[str, Any],
    plan: dict[str, Any] | None = None,
) -> Path:
    """A SegResNet checkpoint (safetensors; task, provenance and plan in the metadata) for the
    benchmark; the engine loads SegResMamba checkpoints only, so this one is not importable.
    Written beside ``path`` and renamed into place, so a kill never leaves half a file."""
    model = getattr(model, "module", model)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "network": SEGRESNET,
        "task_definition": json.dumps(task.to_dict()),
        "provenance": json.dumps(provenance),
    }
    if plan is not None:
        metadata["plan"] = json.dumps(plan)
    with temporary_beside(path) as temporary:
        safetensors.torch.save_file(tensors, str(temporary), metadata=metadata)
        return land(temporary, path)

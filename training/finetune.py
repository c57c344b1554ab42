"""``training.train --dataset D --init-from MODEL``: teach a model more cases instead of starting over.

A user who corrected one more case wants the model they have, a little better, in minutes; a
run from scratch takes an hour and forgets nothing it could keep. So the run starts from MODEL's
weights with MODEL's own task and plan (its checkpoint header carries both: the network, spacing,
patch and intensity rule the weights were trained for), for the plan's short ``finetune``
length and learning rate, on the dataset's current cases (the folds are dealt again).

What must fit is checked before anything runs: the dataset's channels must be the model's, in
count, names and order, or the run is refused in one line (exit 2). Labels may differ: the task
then takes the dataset's labels, and only the output layer starts afresh.

MODEL is a checkpoint file (SegResMamba's, or a SegResNet one written by ``--model segresnet``),
or the name of an imported user task, ``NAME`` (its newest version) or ``NAME@K``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import nn

from segresmamba.datasets import OwnDataset
from segresmamba.errors import SegResMambaError
from segresmamba.tasks import get_task
from segresmamba.weights import load_checkpoint, read_header, resolve_model

from .own_task import dataset_labels, input_name
from .plan import FINETUNE_DEFAULTS, dataset_section, folds_section

__all__ = [
    "InitFromError",
    "Parent",
    "check_channels",
    "finetune_plan",
    "finetune_section",
    "load_parent_weights",
    "read_parent",
    "trained_cases",
]

OUTPUT_LAYER = {"segresmamba": "head.", "segresnet": "conv_final.2."}
"""Names of the tensors that turn features into label scores: all that starts afresh when the
labels differ."""

SEGRESNET = "monai.networks.nets.SegResNet"
"""The ``network`` metadata of the SegResNet checkpoints ``own_data.save_peer`` writes."""


class InitFromError(SegResMambaError):
    """``--init-from`` names a model this run cannot start from (exit 2, before anything runs)."""


@dataclass(frozen=True)
class Parent:
    """The model a run starts from: where it is, what it is, and what it was trained for."""

    given: str  # as the user typed it (path, NAME or NAME@K)
    path: Path
    sha256: str
    model: str  # "segresmamba" or "segresnet"
    task: dict[str, Any]
    plan: dict[str, Any] | None
    provenance: dict[str, Any]

    def record(self) -> dict[str, Any]:
        """What the child's provenance says about its parent."""
        return {"model": self.given, "path": str(self.path), "sha256": self.sha256}

    def same_labels(self, task: dict[str, Any]) -> bool:
        """Whether ``task`` scores the labels (or regions) the parent's output layer was
        trained for, in the same order."""
        return _labels_of(task) == _labels_of(self.task)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The parent's weights (SegResMamba's checked against their header checksum)."""
        if self.model == "segresmamba":
            return load_checkpoint(self.path)[0].state_dict()
        return safetensors.torch.load_file(str(self.path), device="cpu")


def _resolve(text: str) -> Path:
    path = Path(text).expanduser()
    if path.is_file():
        return path.resolve()
    if "/" in text or "\\" in text or text.endswith(".safetensors"):
        raise InitFromError(f"--init-from {text}: no such checkpoint file")
    try:
        return resolve_model(text, download=False)  # NAME (newest version) or NAME@K
    except SegResMambaError as error:
        raise InitFromError(f"--init-from {text}: {error}") from None


def _metadata(path: Path) -> dict[str, str]:
    try:
        with safetensors.safe_open(str(path), framework="pt") as file:
            return file.metadata() or {}
    except Exception:  # safetensors raises its own types; read_header then names the problem
        return {}


def read_parent(text: str, model: str) -> Parent:
    """The checkpoint ``text`` names, read and checked to be a ``model`` network."""
    from segresmamba.weights._files import sha256_file

    path = _resolve(text)
    metadata = _metadata(path)
    if metadata.get("network") == SEGRESNET:
        kind = "segresnet"
        task = json.loads(metadata["task_definition"])
        plan = json.loads(metadata["plan"]) if "plan" in metadata else None
        provenance = json.loads(metadata.get("provenance", "{}"))
    else:
        kind = "segresmamba"
        try:
            header = read_header(path)
        except SegResMambaError as error:
            raise InitFromError(f"--init-from {text}: {error}") from None
        task = header.get("task_definition") or get_task(header["task"]).to_dict()
        plan, provenance = header.get("plan"), header["provenance"]
    if kind != model:
        raise InitFromError(
            f"--init-from {text} is a {kind} checkpoint; fine-tune it with --model {kind}"
        )
    return Parent(text, path, sha256_file(path), kind, task, plan, provenance)


def check_channels(parent: Parent, dataset: OwnDataset) -> None:
    """Refuse a dataset whose channels are not the model's (count, names, order)."""
    if parent.plan is not None:
        theirs = list(parent.plan["dataset"]["channels"])
        ours = list(dataset.channel_names)
    else:  # an older checkpoint: its task's input names, made as own_task makes them
        theirs = [spec["name"] for spec in parent.task["inputs"]]
        ours = [input_name(name, i) for i, name in enumerate(dataset.channel_names)]
    if theirs != ours:
        raise InitFromError(
            f"{dataset.folder} has channels ({', '.join(ours)}) but --init-from "
            f"{parent.given} was trained on ({', '.join(theirs)}); fine-tuning needs the same "
            "channels in the same order"
        )


def _labels_of(task: dict[str, Any]) -> tuple[Any, ...]:
    regions = (task.get("labelmap") or {}).get("regions")
    return task["output"], [(x["value"], x["name"]) for x in task["labels"]], regions


def _relabelled(parent: Parent, dataset: OwnDataset) -> tuple[dict[str, Any], str | None]:
    """(the task to train, a log line when its labels are the dataset's, not the model's)."""
    labels, labelmap = dataset_labels(dataset)
    wanted = {**parent.task, "labels": labels, "output": "sigmoid" if labelmap else "softmax"}
    wanted.pop("labelmap", None)
    if labelmap is not None:
        wanted["labelmap"] = labelmap
    if parent.same_labels(wanted):
        return copy.deepcopy(parent.task), None
    old = ", ".join(x["name"] for x in parent.task["labels"])
    new = ", ".join(x["name"] for x in labels)
    return wanted, (
        f"labels differ: {parent.given} has ({old}), {dataset.name} has ({new}); the output "
        "layer is re-initialised, every other layer starts from the model"
    )


def finetune_section(plan: dict[str, Any], device: str) -> dict[str, Any]:
    """The plan's ``finetune`` section, defaults filled in for plans written before it."""
    return {**FINETUNE_DEFAULTS[device], **(plan.get("finetune") or {})}


def finetune_plan(
    parent: Parent, dataset: OwnDataset, device: str, fresh_plan: Any
) -> tuple[dict[str, Any], list[str]]:
    """(the plan this fine-tune runs, log lines saying what was decided and why).

    The model's own plan, with its task (relabelled when the dataset's labels differ), this
    dataset in its ``dataset`` section and the folds dealt again over the current cases.
    ``fresh_plan()`` plans the dataset, for a model whose header carries no plan: its training
    settings are used, never its task (the weights fit the model's own network and grid).
    """
    notes = []
    if parent.plan is not None:
        plan = copy.deepcopy(parent.plan)
    else:
        plan = fresh_plan()
        notes.append(
            f"{parent.given} carries no plan: training settings planned for {dataset.name}; "
            "network, spacing, patch and intensity are the model's"
        )
    task, relabelled = _relabelled(parent, dataset)
    if relabelled:
        notes.append(relabelled)
    seed = int(plan.get("folds", {}).get("seed", 0))
    plan.update(task=task, dataset=dataset_section(dataset), folds=folds_section(dataset, seed))
    plan["finetune"] = finetune_section(plan, device)
    return plan, notes


def load_parent_weights(model: nn.Module, parent: Parent, relabel: bool) -> None:
    """Put the parent's weights into ``model``; with ``relabel`` the output layer keeps the fresh
    initialisation it was built with. Any other difference is a CheckpointError-like refusal."""
    prefix = OUTPUT_LAYER[parent.model]
    state = parent.state_dict()
    if relabel:
        state = {k: v for k, v in state.items() if not k.startswith(prefix)}
    wanted = {k for k in model.state_dict() if not (relabel and k.startswith(prefix))}
    if set(state) != wanted:
        extra, missing = sorted(set(state) - wanted), sorted(wanted - set(state))
        raise InitFromError(
            f"--init-from {parent.given} does not fit the network it describes "
            f"(unexpected: {extra[:3]}, missing: {missing[:3]})"
        )
    model.load_state_dict(state, strict=not relabel)


def trained_cases(parent: Parent | None, dataset_name: str, training: list[str]) -> list[str]:
    """Every case the weights have been trained on: this run's, and the parent's when it was
    trained on the same dataset (a fine-tune keeps what it learnt)."""
    cases = set(training)
    if parent is not None and parent.provenance.get("dataset") == dataset_name:
        earlier = parent.provenance.get("trained_cases")
        if earlier is None:
            earlier = (parent.provenance.get("split_cases") or {}).get("training") or []
        cases.update(earlier)
    return sorted(cases)

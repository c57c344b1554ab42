"""The resume state: everything needed to continue a run exactly, in one file, without pickle.

``torch.save`` files are pickles, which can run code when loaded. The resume state is instead
one safetensors file: every tensor (model, AdamW moments and step counts, torch RNG states) as a
tensor, and everything else (scheduler, grad scaler, optimizer hyperparameters, Python and
NumPy RNG states, step, epoch, position in the epoch, best Dice, arguments) as JSON in the
file's metadata. It is written beside its final name and renamed into place, so a crash while
saving leaves the previous state intact.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from torch import nn

__all__ = ["load_state", "rng_state", "save_state", "set_rng_state"]

STATE_KEY = "segresmamba_training_state"
STATE_FORMAT = "segresmamba-training-state"
STATE_VERSION = 1


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, JSON) of the torch, CUDA, NumPy and Python random number generators."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{index}"] = state
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    info = {
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "python": [version, list(internal), gauss],
    }
    return tensors, info


def set_rng_state(tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured (CUDA states only where there are GPUs)."""
    torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k[9:]))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda][: torch.cuda.device_count()])
    kind, keys, pos, has_gauss, cached = info["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = info["python"]
    random.setstate((version, tuple(internal), gauss))


def _optimizer_split(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """AdamW's state dict as (tensors by flat name, JSON for the rest)."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for param_id, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{param_id}.{name}"] = value
            else:
                scalars[f"{param_id}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_join(tensors: dict[str, torch.Tensor], info: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            param_id, name = key[len("optimizer.") :].split(".", 1)
            state.setdefault(int(param_id), {})[name] = value
    for key, value in info["scalars"].items():
        param_id, name = key.split(".", 1)
        state.setdefault(int(param_id), {})[name] = value
    return {"state": state, "param_groups": info["param_groups"]}


def save_state(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    progress: dict[str, Any],
) -> Path:
    """Write the full resume state atomically; ``progress`` is plain JSON (step, epoch, ...)."""
    path = Path(path)
    model = getattr(model, "module", model)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    optimizer_tensors, optimizer_info = _optimizer_split(optimizer)
    rng_tensors, rng_info = rng_state()
    tensors.update(optimizer_tensors)
    tensors.update(rng_tensors)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    info = {
        "format": STATE_FORMAT,
        "format_version": STATE_VERSION,
        "progress": progress,
        "optimizer": optimizer_info,
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": rng_info,
    }
    metadata = {STATE_KEY: json.dumps(info)}
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        safetensors.torch.save_file(tensors, str(temporary), metadata=metadata)
        with open(temporary, "rb") as file:
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def read_progress(path: str | Path) -> dict[str, Any]:
    """The JSON part of a resume state (no tensors loaded)."""
    with safetensors.safe_open(str(path), framework="pt") as file:
        metadata = file.metadata() or {}
    if STATE_KEY not in metadata:
        raise ValueError(f"{path} is not a SegResMamba training state")
    info = json.loads(metadata[STATE_KEY])
    if info.get("format") != STATE_FORMAT or info.get("format_version", 0) > STATE_VERSION:
        raise ValueError(f"{path}: unsupported training state format {info.get('format')!r}")
    return info


def load_state(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    device: torch.device,
) -> dict[str, Any]:
    """Restore a state written by :func:`save_state` in place; returns its ``progress``."""
    info = read_progress(path)
    tensors = safetensors.torch.load_file(str(path), device="cpu")
    model = getattr(model, "module", model)
    model.load_state_dict(
        {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True
    )
    optimizer.load_state_dict(_optimizer_join(tensors, info["optimizer"]))
    for values in optimizer.state.values():  # moments on the model's device, step on the CPU
        for name, value in values.items():
            if isinstance(value, torch.Tensor) and name != "step":
                values[name] = value.to(device)
    scheduler.load_state_dict(info["scheduler"])
    scaler.load_state_dict(info["scaler"])
    set_rng_state({k: v for k, v in tensors.items() if k.startswith("rng.")}, info["rng"])
    return info["progress"]

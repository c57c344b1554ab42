"""SegResMamba checkpoints: safetensors weights plus a JSON header, never pickle.

``torch.load`` can run arbitrary code hidden in a checkpoint, so checkpoints are safetensors files
(plain tensors) whose metadata key ``"segresmamba"`` holds the header: the task, the network
arguments, the labels, the preprocessing and where the weights came from. Loading checks that
header and every tensor name and shape before any weight is used, and names what does not fit.
The header also carries ``weights_sha256`` over all tensors, so a flipped byte is caught even for
a file that no registry knows.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import inspect
import json
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import nn

from ..errors import CheckpointError, SegResMambaError
from ..network import SegResMamba
from ..tasks import Task, get_task, task_names
from ._files import land, temporary_beside

FORMAT = "segresmamba-checkpoint"
FORMAT_VERSION = 1
METADATA_KEY = "segresmamba"
REQUIRED_FIELDS = (
    "format",
    "format_version",
    "task",
    "network",
    "labels",
    "preprocessing",
    "provenance",
)
PROVENANCE_FIELDS = ("dataset", "split", "steps", "dice", "commit", "date", "command")
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit


def network_arguments() -> dict[str, Any]:
    """SegResMamba's architecture arguments and defaults (``scan_backend`` is a runtime choice)."""
    parameters = inspect.signature(SegResMamba.__init__).parameters
    return {n: p.default for n, p in parameters.items() if n not in ("self", "scan_backend")}


def make_header(
    task: str | Task,
    network_kwargs: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The checkpoint header for a network trained for ``task``.

    ``network_kwargs`` override the task's network (channels follow from the task and must agree
    with it when given); every architecture argument is written out, defaults included, so a
    checkpoint keeps meaning the same network if a default changes. ``provenance`` keeps
    dataset, split, steps, dice, commit, date (default: now, UTC) and command, plus any extras.
    """
    task = get_task(task)
    network = {**task.network, **dict(network_kwargs or {})}
    network.pop("scan_backend", None)
    for key, expected in (("in_channels", task.in_channels), ("out_channels", task.out_channels)):
        if network.setdefault(key, expected) != expected:
            raise CheckpointError(
                f"network {key}={network[key]} does not fit task {task.name}, which needs {expected}"
            )
    unknown = sorted(set(network) - set(network_arguments()))
    if unknown:
        raise CheckpointError(f"unknown SegResMamba argument(s): {', '.join(unknown)}")
    network = {**network_arguments(), **network}
    network["widths"] = [int(w) for w in network["widths"]]
    record = {field: None for field in PROVENANCE_FIELDS}
    record["date"] = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    record.update(dict(provenance or {}))
    header: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "task": task.name,
        "network": network,
        "output": task.output,
        "inputs": [spec.name for spec in task.inputs],
        "labels": [label.to_dict() for label in task.labels],
        "preprocessing": {
            "spacing_mm": list(task.spacing_mm),
            "fast_spacing_mm": list(task.fast_spacing_mm),
            "patch_size": list(task.patch_size),
            "intensity": dict(task.intensity),
        },
        "provenance": record,
        # The whole task, so a model trained on a user's own data describes itself.
        "task_definition": task.to_dict(),
    }
    if task.labelmap is not None:
        header["labelmap"] = task.labelmap.to_dict()
    try:
        return json.loads(json.dumps(header))
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"the checkpoint header must be plain JSON data: {error}") from None


def check_header(header: Any, task: str | Task | None = None) -> dict[str, Any]:
    """Raise CheckpointError naming the first problem of a header (and its fit to ``task``)."""
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        found = header.get("format") if isinstance(header, dict) else type(header).__name__
        raise CheckpointError(
            f"not a SegResMamba checkpoint header (format {found!r}, expected {FORMAT!r})"
        )
    version = header.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"checkpoint header has an invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint format_version {version} is newer than this segresmamba reads "
            f"({FORMAT_VERSION}); update segresmamba"
        )
    missing = [field for field in REQUIRED_FIELDS if field not in header]
    if missing:
        raise CheckpointError(f"checkpoint header lacks required field(s): {', '.join(missing)}")
    network, labels = header["network"], header["labels"]
    if not isinstance(header["task"], str) or not isinstance(network, dict):
        raise CheckpointError("checkpoint header: task must be a name and network an object")
    for key in ("in_channels", "out_channels"):
        if not isinstance(network.get(key), int) or network[key] < 1:
            raise CheckpointError(f"checkpoint header: network.{key} must be a positive integer")
    unknown = sorted(set(network) - set(network_arguments()))
    if unknown:
        raise CheckpointError(
            f"checkpoint header: unknown network argument(s) {', '.join(unknown)}"
        )
    if not isinstance(labels, list) or not all(isinstance(x, dict) and "name" in x for x in labels):
        raise CheckpointError("checkpoint header: labels must be a list of {value, name, ...}")
    if len(labels) != network["out_channels"]:
        raise CheckpointError(
            f"checkpoint header lists {len(labels)} labels but the network has "
            f"out_channels={network['out_channels']}"
        )
    pre = header["preprocessing"]
    if not isinstance(pre, dict) or not all(
        k in pre for k in ("spacing_mm", "patch_size", "intensity")
    ):
        raise CheckpointError(
            "checkpoint header: preprocessing needs spacing_mm, patch_size, intensity"
        )
    if not isinstance(header["provenance"], dict):
        raise CheckpointError("checkpoint header: provenance must be an object")
    if task is not None:
        _check_fits_task(header, get_task(task))
    return header


def _check_fits_task(header: dict[str, Any], task: Task) -> None:
    if header["task"] != task.name:
        hint = ""
        if header["task"] not in task_names():
            hint = (
                f"; task {header['task']} is not registered: register it with "
                "`segresmamba models import FILE`"
            )
        raise CheckpointError(f"checkpoint is for task {header['task']}, not {task.name}{hint}")
    if header["network"]["in_channels"] != task.in_channels:
        raise CheckpointError(
            f"checkpoint takes {header['network']['in_channels']} input image(s), task "
            f"{task.name} has {task.in_channels}"
        )
    theirs = [(x.get("value"), x["name"]) for x in header["labels"]]
    ours = [(label.value, label.name) for label in task.labels]
    if theirs != ours:
        if len(theirs) != len(ours):
            detail = f"{len(theirs)} labels in the checkpoint, {len(ours)} in the task"
        else:
            i = next(i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b)
            detail = f"label {ours[i][0]} is {theirs[i][1]!r} in the checkpoint, {ours[i][1]!r} in the task"
        raise CheckpointError(f"checkpoint labels differ from task {task.name}'s: {detail}")


def weights_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_checkpoint(
    path: str | Path, model: nn.Module, header: Mapping[str, Any], *, overwrite: bool = False
) -> Path:
    """Write ``model``'s weights and ``header`` (see :func:`make_header`) as safetensors.

    The file is written beside its final name, fsynced and renamed into place, so a crash never
    leaves a half checkpoint. An existing file is replaced only with ``overwrite=True``.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise CheckpointError(f"{path} already exists; pass overwrite=True to replace it")
    model = getattr(model, "_orig_mod", model)  # torch.compile
    model = getattr(model, "module", model)  # DistributedDataParallel
    header = check_header(json.loads(json.dumps(dict(header))))
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with torch.device("meta"):
        reference = SegResMamba(**header["network"])
    _check_state(
        tensors, reference.state_dict(), f"model does not match header network {header['network']}"
    )
    header["weights_sha256"] = weights_digest(tensors)
    from .. import __version__

    header.setdefault("segresmamba_version", __version__)
    metadata = {METADATA_KEY: json.dumps(header), "format": "pt"}
    with temporary_beside(path) as temporary:
        try:
            safetensors.torch.save_file(tensors, str(temporary), metadata=metadata)
        except (RuntimeError, ValueError) as error:
            raise CheckpointError(f"cannot write checkpoint {path}: {error}") from None
        return land(temporary, path)


def read_header(path: str | Path, task: str | Task | None = None) -> dict[str, Any]:
    """Read and check a checkpoint's header without loading weights (fast)."""
    path = Path(path)
    header, _ = _read_structure(path)
    try:
        return check_header(header, task)
    except CheckpointError as error:
        raise CheckpointError(f"{path.name}: {error}") from None


def load_checkpoint(
    path: str | Path, task: str | Task | None = None, device: str | torch.device = "cpu"
) -> tuple[SegResMamba, dict[str, Any]]:
    """Build the SegResMamba a checkpoint describes and load its weights strictly.

    With ``task`` the checkpoint must be for that task. Raises CheckpointError naming the
    problem: not a safetensors file, truncated or corrupt, a header problem, a task mismatch,
    missing or unexpected tensors, or shape differences (with the tensor names).
    """
    path = Path(path)
    header = read_header(path, task)
    try:
        model = SegResMamba(**header["network"])
    except (TypeError, ValueError) as error:
        raise CheckpointError(
            f"{path.name}: the header's network cannot be built: {error}"
        ) from None
    try:
        tensors = safetensors.torch.load_file(str(path), device="cpu")
    except Exception as error:  # safetensors raises its own error types
        raise CheckpointError(
            f"{path.name} is corrupt: its tensors cannot be read ({error})"
        ) from None
    expected = header.get("weights_sha256")
    if expected is not None and weights_digest(tensors) != expected:
        raise CheckpointError(
            f"{path.name} is corrupt or was modified: its weights do not match the checksum in "
            "its header; download or import it again"
        )
    _check_state(tensors, model.state_dict(), f"{path.name} does not fit its network")
    _check_finite(tensors, path.name)
    model.load_state_dict(tensors, strict=True)
    # The spacing the weights were trained at travels with the model, so inference can warn
    # when it would run them at another one (fast mode).
    model.trained_spacing_mm = tuple(header["preprocessing"]["spacing_mm"])
    try:
        model = model.to(device)
    except (RuntimeError, AssertionError, ValueError) as error:
        raise SegResMambaError(f"cannot put the model on device {device!r}: {error}") from None
    return model.eval(), header


def _check_finite(tensors: Mapping[str, torch.Tensor], shown: str) -> None:
    """Refuse NaN or infinite weights: such a model segments nothing (all background), quietly."""
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(
            f"{shown} holds non-finite weights (NaN or infinity) in {len(bad)} tensor(s), e.g. "
            f"{bad[0]}: the training that wrote it diverged; it cannot be used"
        )


def _check_state(
    found: Mapping[str, torch.Tensor], wanted: Mapping[str, torch.Tensor], what: str
) -> None:
    missing = [k for k in wanted if k not in found]
    unexpected = [k for k in found if k not in wanted]
    shapes = [
        f"{k} is {tuple(found[k].shape)}, the network needs {tuple(wanted[k].shape)}"
        for k in wanted
        if k in found and tuple(found[k].shape) != tuple(wanted[k].shape)
    ]
    problems = []
    for title, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            problems.append(f"{len(items)} {title}: {'; '.join(items[:3])}{more}")
    if problems:
        raise CheckpointError(f"{what}: {' | '.join(problems)}")


def _read_structure(path: Path) -> tuple[Any, dict[str, Any]]:
    """Check the safetensors layout by hand, so each failure gets a precise message.

    Returns (header from the metadata, safetensors' own tensor table).
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as file:
            start = file.read(8)
            length = struct.unpack("<Q", start)[0] if len(start) == 8 else None
            table_bytes = (
                file.read(length) if length and length <= min(size - 8, MAX_HEADER_BYTES) else b""
            )
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except OSError as error:
        raise CheckpointError(f"checkpoint {path} cannot be read: {error.strerror}") from None
    if length is None or not table_bytes or not table_bytes.lstrip().startswith(b"{"):
        # Only now, since a valid header length can start with these bytes too.
        if start[:2] == b"PK" or start[:1] == b"\x80":
            raise CheckpointError(
                f"{path.name} looks like a PyTorch pickle (.pt/.pth), which is never loaded "
                "because it can run code; convert it to a SegResMamba safetensors checkpoint"
            )
        raise CheckpointError(
            f"{path.name} is not a safetensors file (or is truncated before its header)"
        )
    try:
        table = json.loads(table_bytes)
    except (UnicodeDecodeError, ValueError):
        raise CheckpointError(
            f"{path.name} is corrupt: its safetensors header is not valid JSON"
        ) from None
    if not isinstance(table, dict):
        raise CheckpointError(f"{path.name} is not a safetensors file")
    try:
        ends = [int(v["data_offsets"][1]) for k, v in table.items() if k != "__metadata__"]
    except (KeyError, IndexError, TypeError, ValueError):
        raise CheckpointError(
            f"{path.name} is corrupt: its safetensors tensor table is malformed"
        ) from None
    data_bytes = size - 8 - length
    if max(ends, default=0) > data_bytes:
        raise CheckpointError(
            f"{path.name} is truncated: it should hold {max(ends)} bytes of tensor data, "
            f"it holds {data_bytes}; download or copy it again"
        )
    metadata = table.get("__metadata__") or {}
    if METADATA_KEY not in metadata:
        raise CheckpointError(
            f"{path.name} has no {METADATA_KEY!r} header: it is a safetensors file but not a "
            "SegResMamba checkpoint"
        )
    try:
        return json.loads(metadata[METADATA_KEY]), table
    except ValueError:
        raise CheckpointError(
            f"{path.name} is corrupt: its {METADATA_KEY!r} header is not JSON"
        ) from None

"""The model registry (``models.json`` in this folder) and the cache folder.

``models.json`` lists every checkpoint the engine knows, with its task, download address, size and
SHA-256; tasks without trained weights are listed with ``url: null`` so the message says so. The
cache folder holds downloaded and imported checkpoints, one file per model, under ``models/``.
Run ``python -m segresmamba.weights.registry FILE [--update NAME]`` to print (or write into
``models.json``) the sha256 and size of a newly trained checkpoint.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..checked_json import read_checked_json
from ..errors import ModelNotAvailableError, RegistryError, UnknownTaskError
from ..home import home_dir, user_models_dir
from ..tasks import get_task
from ._files import land, sha256_file, temporary_beside

WEIGHTS_DIR = Path(__file__).resolve().parent
"""Folder of bundled checkpoints (``bundled`` paths are relative to it)."""
PACKAGE_DIR = WEIGHTS_DIR.parent
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
IMPORT_HINT = "import a checkpoint with `segresmamba models import FILE`"


@dataclass(frozen=True)
class ModelInfo:
    """One entry of ``models.json``."""

    name: str
    task: str
    version: str
    url: str | None
    sha256: str | None
    size: int | None
    licence: str
    inputs: tuple[str, ...]
    description: str
    filename: str
    bundled: str | None = None
    default: bool = False

    def cached_path(self) -> Path:
        """Where a download or import of this model lands."""
        return models_dir() / self.filename

    def bundled_path(self) -> Path | None:
        """The file shipped inside the package, if this model is bundled."""
        return WEIGHTS_DIR / self.bundled if self.bundled else None

    def local_path(self) -> Path | None:
        """The bundled or cached file if one exists, else None."""
        for path in (self.bundled_path(), self.cached_path()):
            if path is not None and path.is_file():
                return path
        return None


def cache_dir() -> Path:
    """The per-user folder (see :func:`segresmamba.home.home_dir`; one place decides it)."""
    return home_dir()


def models_dir() -> Path:
    """``cache_dir()/models``: downloaded and imported checkpoints."""
    return user_models_dir()


def models_json_path() -> Path:
    """Find ``models.json``: ``SEGRESMAMBA_MODELS_JSON`` if set, else the package data beside
    this module (``segresmamba/weights/models.json``).

    One rule for every install: a wheel, an editable checkout and Slicer's
    ``qt-scripted-modules`` all carry the registry inside the package, so nothing depends on
    the folder the package sits in."""
    env = os.environ.get("SEGRESMAMBA_MODELS_JSON")
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise RegistryError(f"SEGRESMAMBA_MODELS_JSON points at {path}, which is not a file")
        return path
    candidates = _resource_candidates("models.json")
    for path in candidates:
        if path.is_file():
            return path
    where = ", ".join(str(p) for p in candidates)
    raise RegistryError(f"cannot find models.json (looked at {where}); set SEGRESMAMBA_MODELS_JSON")


def _resource_candidates(name: str) -> list[Path]:
    """Where the engine's own registry files live: package data beside this module."""
    return [WEIGHTS_DIR / name]


def list_models() -> list[ModelInfo]:
    """Every model in the registry, in file order."""
    path = models_json_path()
    stat = path.stat()
    data = _validated(str(path), stat.st_mtime_ns, stat.st_size)
    return [_model_info(item) for item in data["models"]]


def get_model(name: str) -> ModelInfo:
    """The registry entry called ``name``; ModelNotAvailableError listing the names if unknown."""
    models = list_models()
    for info in models:
        if info.name == name:
            return info
    known = ", ".join(m.name for m in models) or "none"
    raise ModelNotAvailableError(f"unknown model {name!r}; the registry lists: {known}")


def no_weights_message(task: str) -> str:
    return f"no trained weights published yet for task {task}; {IMPORT_HINT}"


def registry_entry_for(path: str | os.PathLike) -> dict[str, Any]:
    """sha256, size, task and inputs of a checkpoint file, as ``models.json`` wants them."""
    from .checkpoint import read_header

    path = Path(path)
    header = read_header(path)
    return {
        "task": header["task"],
        "sha256": sha256_file(path),
        "size": path.stat().st_size,
        "inputs": header.get("inputs") or [spec.name for spec in get_task(header["task"]).inputs],
    }


def update_registry(
    name: str, path: str | os.PathLike, models_json: str | os.PathLike | None = None
) -> dict:
    """Write ``path``'s sha256 and size into model ``name`` of ``models.json`` (atomically)."""
    target = Path(models_json) if models_json else models_json_path()
    data = json.loads(target.read_text(encoding="utf-8"))
    entry = next((m for m in data["models"] if m["name"] == name), None)
    if entry is None:
        raise RegistryError(f"{target} has no model {name!r}; add its entry first")
    found = registry_entry_for(path)
    if found["task"] != entry["task"]:
        raise RegistryError(
            f"{path} is a {found['task']} checkpoint, model {name} is for {entry['task']}"
        )
    entry.update(sha256=found["sha256"], size=found["size"])
    with temporary_beside(target) as temporary:
        temporary.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        land(temporary, target)
    return entry


@functools.lru_cache(maxsize=8)
def _validated(path: str, _mtime_ns: int, _size: int) -> dict[str, Any]:
    """Parse and check the model registry; cached per path, modification time and size."""
    data = read_checked_json(path, _schema_path(Path(path)), "model registry")
    names = [m["name"] for m in data["models"]]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise RegistryError(f"model registry {path} lists model(s) twice: {', '.join(twice)}")
    for item in data["models"]:
        try:
            task = get_task(item["task"])
        except UnknownTaskError as error:
            raise RegistryError(f"model registry {path}: model {item['name']}: {error}") from None
        if item["inputs"] != [spec.name for spec in task.inputs]:
            raise RegistryError(
                f"model registry {path}: model {item['name']} lists inputs {item['inputs']}, task "
                f"{task.name} takes {[spec.name for spec in task.inputs]}"
            )
    return data


def _schema_path(models_json: Path) -> Path:
    for path in [
        models_json.with_name("models.schema.json"),
        *_resource_candidates("models.schema.json"),
    ]:
        if path.is_file():
            return path
    raise RegistryError(f"cannot find models.schema.json beside {models_json} or in {WEIGHTS_DIR}")


def _model_info(item: dict[str, Any]) -> ModelInfo:
    return ModelInfo(
        name=item["name"],
        task=item["task"],
        version=item["version"],
        url=item["url"],
        sha256=item["sha256"],
        size=item["size"],
        licence=item["licence"],
        inputs=tuple(item["inputs"]),
        description=item["description"],
        filename=item.get("filename") or f"{item['name']}.safetensors",
        bundled=item.get("bundled"),
        default=bool(item.get("default", False)),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m segresmamba.weights.registry",
        description="Print the models.json fields (sha256, size) of a checkpoint, or write them in.",
    )
    parser.add_argument("checkpoint", help="a SegResMamba .safetensors checkpoint")
    parser.add_argument(
        "--update", metavar="NAME", help="write them into model NAME of models.json"
    )
    parser.add_argument("--models-json", help="the models.json to update (default: the one in use)")
    args = parser.parse_args(argv)
    from ..errors import SegResMambaError

    try:
        if args.update:
            result = update_registry(args.update, args.checkpoint, args.models_json)
        else:
            result = registry_entry_for(args.checkpoint)
    except SegResMambaError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

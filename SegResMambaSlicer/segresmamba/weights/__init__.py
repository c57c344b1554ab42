"""Checkpoints (safetensors + JSON header, never pickle), the model registry and the cache.

``save_checkpoint``/``load_checkpoint`` write and read checkpoints; ``resolve_model`` finds the
file a task should use (bundled, cached, downloaded or a path given by the user);
``download_model``, ``import_model`` and ``verify_model`` bring files into the cache and check them.
"""

from .checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    METADATA_KEY,
    check_header,
    load_checkpoint,
    make_header,
    read_header,
    save_checkpoint,
    weights_digest,
)
from .download import download_model
from .importing import VerifiedModel, import_model, verify_model
from .registry import (
    ModelInfo,
    cache_dir,
    get_model,
    list_models,
    models_dir,
    models_json_path,
    registry_entry_for,
    update_registry,
)
from .resolve import ImportedModel, imported_models, resolve_model

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ImportedModel",
    "METADATA_KEY",
    "ModelInfo",
    "VerifiedModel",
    "cache_dir",
    "check_header",
    "download_model",
    "get_model",
    "import_model",
    "imported_models",
    "list_models",
    "load_checkpoint",
    "make_header",
    "models_dir",
    "models_json_path",
    "read_header",
    "registry_entry_for",
    "resolve_model",
    "save_checkpoint",
    "update_registry",
    "verify_model",
    "weights_digest",
]

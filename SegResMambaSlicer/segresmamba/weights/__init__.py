"""Checkpoints (safetensors + JSON header, never pickle), the model registry and the cache.

``save_checkpoint``/``load_checkpoint`` write and read checkpoints; ``resolve_model`` finds the
file a task should use (bundled, cached, downloaded or a path given by the user);
``download_model``, ``import_model`` and ``verify_model`` bring files into the cache and check them.
``model_versions`` lists the versions of a user's own task (each import is kept: ``NAME@K``).
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
from .versions import (
    ModelVersion,
    get_version,
    model_versions,
    split_version,
    task_version,
    version_of,
)

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ImportedModel",
    "METADATA_KEY",
    "ModelInfo",
    "ModelVersion",
    "VerifiedModel",
    "cache_dir",
    "check_header",
    "download_model",
    "get_model",
    "get_version",
    "import_model",
    "imported_models",
    "list_models",
    "load_checkpoint",
    "make_header",
    "model_versions",
    "models_dir",
    "models_json_path",
    "read_header",
    "registry_entry_for",
    "resolve_model",
    "save_checkpoint",
    "split_version",
    "task_version",
    "update_registry",
    "verify_model",
    "version_of",
    "weights_digest",
]

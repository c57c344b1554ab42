"""JSON data files held to a JSON Schema: one reader for the task and model registries and for
the task definitions that models carry, so every such file fails with the same kind of line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import RegistryError

__all__ = ["read_checked_json", "schema_problem"]


def schema_problem(data: Any, schema_path: Path, skip: int = 0) -> tuple[str, str] | None:
    """``(where, message)`` of the most relevant violation of the schema in ``schema_path``, or
    None; ``where`` is the path into ``data`` (its first ``skip`` parts left out, for data that
    was wrapped to fit the schema), empty at the top level."""
    import jsonschema  # only when checking: reading task names must work without it

    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(schema).iter_errors(data)
    )
    if error is None:
        return None
    return "/".join(str(part) for part in list(error.absolute_path)[skip:]), error.message


def read_checked_json(path: str | Path, schema_path: Path, what: str) -> Any:
    """The data of the JSON file ``path`` when it parses and fits the schema; otherwise a
    RegistryError saying ``"<what> <path> ..."`` and the first problem."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise RegistryError(f"{what} {path} cannot be read: {error}") from None
    except json.JSONDecodeError as error:
        raise RegistryError(f"{what} {path} is not valid JSON: {error}") from None
    problem = schema_problem(data, schema_path)
    if problem is not None:
        raise RegistryError(
            f"{what} {path} is invalid at {problem[0] or 'top level'}: {problem[1]}"
        )
    return data

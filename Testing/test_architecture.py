"""The rooms of docs/architecture.md and what each may import, checked on the code: a new
import that crosses a line the page draws fails here, so the page cannot go stale quietly."""

from __future__ import annotations

import re

from test_import_cycles import ROOT, module_graph

REPO = ROOT.parent
BASE = {"errors", "home", "threads", "checked_json", "(package)"}
ALLOWED = {
    "errors": set(),
    "home": {"errors"},
    "threads": {"errors"},
    "checked_json": {"errors"},
    "scan": set(),
    "network": {"scan"},
    "tasks": {"errors", "home", "checked_json", "io.atomic"},
    "io": {"errors", "tasks", "(package)"},
    "weights": BASE | {"io", "network", "tasks"},
    "inference": BASE | {"io", "network", "tasks", "weights"},
    "datasets": BASE | {"io", "tasks"},
}
"""Room -> the rooms (or single modules, ``room.module``) it may import; ``(package)`` is the
package's own ``__init__`` (its ``__version__``)."""


def _room(module: str) -> str:
    parts = module.split(".")[1:]
    return parts[0] if parts else "(package)"


def _crossings() -> list[tuple[str, str, str, str]]:
    graph = module_graph(ROOT / "segresmamba")
    found = []
    for source, targets in graph.items():
        for target in targets:
            room, other = _room(source), _room(target)
            if room != other:
                found.append((source, target, room, other))
    return found


def test_every_room_imports_only_what_the_architecture_page_allows() -> None:
    broken = []
    for source, target, room, other in _crossings():
        if room not in ALLOWED:
            continue
        allowed = ALLOWED[room]
        single = ".".join(target.split(".")[1:3])
        if other not in allowed and single not in allowed:
            broken.append(f"{source} imports {target}")
    assert not broken, broken


def test_nothing_below_the_faces_imports_the_cli_or_the_benches() -> None:
    faces = {"cli", "cli_segment", "cli_dataset", "cli_models", "__main__", "bench"}
    wrong = [f"{s} imports {t}" for s, t, room, other in _crossings() if other in faces - {room}]
    wrong = [w for w in wrong if w.split(".")[1].split(" ")[0] not in faces]
    assert not wrong, wrong


def test_the_engine_never_imports_training_slicer_or_qt() -> None:
    pattern = re.compile(r"^\s*(from|import)\s+(training|slicer|qt|SegResMambaSlicerLib)\b", re.M)
    hits = [
        str(path.relative_to(REPO))
        for path in (ROOT / "segresmamba").rglob("*.py")
        if pattern.search(path.read_text(encoding="utf-8"))
    ]
    assert not hits, hits


def test_the_page_lists_every_room_of_the_engine() -> None:
    page = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    rooms = {
        path.name if path.is_dir() else path.stem
        for path in (ROOT / "segresmamba").iterdir()
        if (path.is_dir() and (path / "__init__.py").exists())
        or (path.suffix == ".py" and path.stem != "__init__")
    }
    missing = sorted(r for r in rooms if f"`{r}/`" not in page and f"`{r}.py`" not in page)
    cli_files = {r for r in missing if r.startswith("cli") or r == "__main__"}
    assert not set(missing) - cli_files, missing  # cli*.py are one row

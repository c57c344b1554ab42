"""No import cycles in the engine or the Slicer module's Lib: every ``import`` and ``from ...
import`` (module level or inside a function) between their modules, read with ``ast``, must form
a graph without cycles, so each module can be understood, tested and loaded on its own."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "SegResMambaSlicer"


def module_graph(package: Path) -> dict[str, set[str]]:
    """Module name -> the package's modules it imports."""
    modules: dict[str, tuple[Path, bool]] = {}
    for file in package.rglob("*.py"):
        parts = list(file.relative_to(package.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (file, is_package)
    graph: dict[str, set[str]] = {}
    for name, (file, is_package) in modules.items():
        base = name.split(".") if is_package else name.split(".")[:-1]
        edges = set()
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                stem = base[: len(base) - node.level + 1] if node.level else []
                target = ".".join(stem + ([node.module] if node.module else []))
                candidates = [f"{target}.{alias.name}" for alias in node.names] + [target]
            elif isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                continue
            hit = next((c for c in candidates if c in modules and c != name), None)
            if hit:
                edges.add(hit)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_checker_finds_a_cycle(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "a.py").write_text("from . import b\n", encoding="utf-8")
    (package / "b.py").write_text("def f():\n    from .a import x\n", encoding="utf-8")
    assert cycles(module_graph(package)) == [["pkg.a", "pkg.b"]]


@pytest.mark.parametrize("package", ["segresmamba", "SegResMambaSlicerLib"])
def test_no_import_cycles(package):
    graph = module_graph(ROOT / package)
    assert len(graph) > 5
    assert cycles(graph) == []

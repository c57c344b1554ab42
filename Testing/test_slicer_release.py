"""The Slicer releases we support (5.10 and later), checked against files of those releases:
Python 3.12 (what Slicer 5.10+ ships), the Extensions Index schema, Slicer's terminology.

The Slicer files are kept in ``Testing/data/slicer`` (see the README there for their source).
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import jsonschema
import pytest

from segresmamba.io.seg_nrrd import ANATOMIC_CONTEXT, TERMINOLOGY_CONTEXT, terminology_entry
from segresmamba.tasks import TASKS_JSON, list_tasks

REPO = Path(__file__).resolve().parents[1]
SLICER_DATA = Path(__file__).resolve().parent / "data" / "slicer"
MODULE_DIR = REPO / "SegResMambaSlicer"
SUPPORTED = "Slicer 5.10 or later"


def _read_gz(name: str) -> dict:
    with gzip.open(SLICER_DATA / name, "rt", encoding="utf-8") as file:
        return json.load(file)


def _codes_in(item) -> list[tuple[str, dict]]:
    """Every (where, terminology) in a tasks.json task: labels and labelmap labels."""
    found = [(f"{item['name']}/{label['name']}", label["terminology"]) for label in item["labels"]]
    for label in item.get("labelmap", {}).get("labels", []):
        found.append((f"{item['name']}/labelmap/{label['name']}", label["terminology"]))
    return found


def test_every_task_code_is_in_the_slicer_context_the_segments_are_written_under():
    """Slicer 5.10/5.12's DICOM master list must hold each category, type and modifier (with
    the same meaning), or Slicer cannot resolve the segment's terminology."""
    context = _read_gz("SegmentationCategoryTypeModifier-DICOM-Master.json.gz")
    assert context["SegmentationCategoryTypeContextName"] == TERMINOLOGY_CONTEXT
    anatomic = _read_gz("AnatomicRegionAndModifier-DICOM-Master.json.gz")
    assert anatomic["AnatomicContextName"] == ANATOMIC_CONTEXT
    known: dict[tuple, tuple[str, dict]] = {}
    for category in context["SegmentationCodes"]["Category"]:
        for kind in category.get("Type", []):
            key = (category["CodingSchemeDesignator"], category["CodeValue"])
            key += (kind["CodingSchemeDesignator"], kind["CodeValue"])
            modifiers = {
                (m["CodingSchemeDesignator"], m["CodeValue"]): m["CodeMeaning"]
                for m in kind.get("Modifier", [])
            }
            meanings = {"category": category["CodeMeaning"], "type": kind["CodeMeaning"]}
            known[key] = (meanings, modifiers)
    tasks = json.loads(TASKS_JSON.read_text(encoding="utf-8"))["tasks"]
    checked, problems = 0, []
    for item in tasks:
        for where, term in _codes_in(item):
            checked += 1
            cat, typ, mod = term["category"], term["type"], term.get("modifier")
            key = (cat["scheme"], cat["value"], typ["scheme"], typ["value"])
            if key not in known:
                problems.append(f"{where}: {cat['value']}/{typ['scheme']} {typ['value']}")
                continue
            meanings, modifiers = known[key]
            if (meanings["category"], meanings["type"]) != (cat["meaning"], typ["meaning"]):
                problems.append(f"{where}: meanings differ from Slicer's {meanings}")
            if mod and modifiers.get((mod["scheme"], mod["value"])) != mod["meaning"]:
                problems.append(f"{where}: modifier {mod['value']} not in Slicer's list")
    assert not problems, problems
    assert checked >= 25
    for task in list_tasks():  # and the entries we write name that context
        for label in task.foreground_labels:
            entry = terminology_entry(label.terminology).split("~")
            assert entry[0] == TERMINOLOGY_CONTEXT and entry[4] == ANATOMIC_CONTEXT


def _cmake_settings() -> dict[str, str]:
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    return dict(re.findall(r'set\((EXTENSION_\w+)\s+"([^"]*)"\)', text))


def test_extensions_index_entry_validates_against_schema_v1_0_1():
    schema = json.loads(
        (SLICER_DATA / "slicer-extension-catalog-entry-schema-v1.0.1.json").read_text(
            encoding="utf-8"
        )
    )
    name = re.search(
        r"project\((\w+)\)", (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    ).group(1)
    entry = json.loads((REPO / "docs" / f"{name}.json").read_text(encoding="utf-8"))
    jsonschema.validate(entry, schema, cls=jsonschema.Draft7Validator)
    assert entry["$schema"] == schema["$id"]  # v1.0.1, what the release branches validate
    # the Index's checks: extension name without "Slicer", repository name starting with it
    assert name == "SegResMamba"
    repository = entry["scm_url"].rstrip("/").rsplit("/", 1)[1].removesuffix(".git")
    assert repository == "SlicerSegResMamba"
    settings = _cmake_settings()
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        for url in settings[key].split():
            assert "/SlicerSegResMamba/" in url, (key, url)
    assert "SlicerSegResMamba" in (REPO / "README.md").read_text(encoding="utf-8")


def test_supported_slicer_and_python_versions_are_said_the_same_everywhere():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    slicer_doc = (REPO / "docs" / "slicer.md").read_text(encoding="utf-8")
    module = (MODULE_DIR / "SegResMambaSlicer.py").read_text(encoding="utf-8")
    for text in (readme, slicer_doc, module):
        assert SUPPORTED in text
        assert not re.search(r"Slicer 5\.[0-9] or later", text)
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    minimum = re.search(r'requires-python = ">=(3\.\d+)"', pyproject).group(1)
    assert f"Python {minimum} or later" in readme
    assert "3.12" in slicer_doc  # the Python Slicer 5.10+ ships


def _python_3_12() -> str | None:
    found = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python3.12")))
    return found[-1] if found else shutil.which("python3.12")


CHECK_312 = textwrap.dedent(
    """
    import ast, importlib, importlib.util, sys
    from pathlib import Path
    root = Path(sys.argv[1])
    sys.path.insert(0, str(root))
    compiled, imported = 0, []
    for path in sorted(root.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        tree = compile(source, str(path), "exec", ast.PyCF_ONLY_AST)
        compile(tree, str(path), "exec")
        compiled += 1
        tops = []
        for node in tree.body:
            if isinstance(node, ast.Import):
                tops += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                tops.append("." if node.level else node.module)
        roots = {name.split(".")[0] for name in tops}
        if roots - {"__future__"} <= set(sys.stdlib_module_names):
            spec = importlib.util.spec_from_file_location(f"check_{compiled}", path)
            module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            imported.append(path.relative_to(root).as_posix())
    for name in ("dependencies", "process", "tasks", "panel"):  # the package needs no engine
        importlib.import_module(f"SegResMambaSlicerLib.{name}")
    print(sys.version.split()[0], compiled, " ".join(imported))
    """
)


def test_engine_and_module_byte_compile_and_import_stdlib_parts_under_python_3_12():
    """Slicer 5.10+ runs Python 3.12: every engine and module file compiles under it, and the
    stdlib-only files (the dependency check, the child process, the name matcher, ...) import."""
    python = _python_3_12()
    if python is None:
        message = "no Python 3.12 interpreter (pyenv or python3.12 on PATH) to check with"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    result = subprocess.run(
        [python, "-I", "-c", CHECK_312, str(MODULE_DIR)],
        capture_output=True,
        encoding="utf-8",
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    version, compiled, *imported = result.stdout.split()
    assert version.startswith("3.12.")
    assert int(compiled) == len(list(MODULE_DIR.rglob("*.py"))) > 50
    expected = {
        "SegResMambaSlicerLib/dependencies.py",
        "SegResMambaSlicerLib/progress.py",  # process.py imports it; the package import below
        "segresmamba/errors.py",
        "segresmamba/tasks/matching.py",
    }
    assert expected <= set(imported), imported

"""The Slicer extension's packaging: what CMake lists is what the module folder holds, the
metadata the Extensions Index needs is there, and the installed layout runs the engine."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODULE_DIR = REPO / "SegResMambaSlicer"
SKIPPED_PARTS = ("__pycache__", ".egg-info", ".pytest_cache", ".ruff_cache")


def cmake_list(text: str, name: str) -> list[str]:
    """The entries of ``set(NAME ...)`` in a CMakeLists, ``${MODULE_NAME}`` expanded."""
    module = re.search(r"set\(MODULE_NAME (\w+)\)", text).group(1)
    body = re.search(rf"set\({name}\s+(.*?)\)", text, flags=re.S).group(1)
    entries = [line.split("#")[0].strip() for line in body.splitlines()]
    return [e.replace("${MODULE_NAME}", module) for e in entries if e]


def module_cmake() -> tuple[str, list[str], list[str]]:
    text = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    resources = cmake_list(text, "MODULE_PYTHON_RESOURCES")
    resources.append(re.search(r"set\(DEMO_CHECKPOINT (\S+)\)", text).group(1))
    return text, cmake_list(text, "MODULE_PYTHON_SCRIPTS"), resources


def training_scripts() -> list[str]:
    """The repository's training/ files the module ships (as ``<module folder>/training/``)."""
    text = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    return cmake_list(text, "TRAINING_PYTHON_SCRIPTS")


def module_files() -> list[str]:
    files = []
    for path in MODULE_DIR.rglob("*"):
        relative = path.relative_to(MODULE_DIR)
        if path.is_file() and path.suffix != ".pyc" and relative.name != "CMakeLists.txt":
            if not any(part.endswith(SKIPPED_PARTS) for part in relative.parts):
                files.append(relative.as_posix())
    return sorted(files)


def extension_settings() -> dict[str, str]:
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    return dict(re.findall(r'set\((EXTENSION_\w+) "([^"]*)"\)', text))


def test_every_module_file_is_listed_in_cmake():
    _, scripts, resources = module_cmake()
    files = module_files()
    unlisted_scripts = [f for f in files if f.endswith(".py") and f not in scripts]
    unlisted_resources = [f for f in files if not f.endswith(".py") and f not in resources]
    assert not unlisted_scripts, f"add to MODULE_PYTHON_SCRIPTS: {unlisted_scripts}"
    assert not unlisted_resources, f"add to MODULE_PYTHON_RESOURCES: {unlisted_resources}"
    demo = resources[-1]
    stale = [f for f in scripts + resources[:-1] if not (MODULE_DIR / f).is_file()]
    assert not stale, f"CMake lists files that do not exist: {stale}"
    assert demo.endswith(".safetensors")  # listed only when it exists (if(EXISTS ...))


def test_every_training_file_ships_with_the_module():
    """Train in Slicer runs ``PythonSlicer -m training.train`` from the module folder: a
    training file missing from the list would be missing there, and the run would fail."""
    text = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    files = sorted(path.name for path in (REPO / "training").glob("*.py"))
    listed = training_scripts()
    assert "train.py" in listed and "__init__.py" in listed
    assert sorted(set(files) - set(listed)) == [], "add to TRAINING_PYTHON_SCRIPTS"
    assert sorted(set(listed) - set(files)) == [], "TRAINING_PYTHON_SCRIPTS lists missing files"
    # copied into the build folder's training/ and given to the macro by absolute path, so
    # ctkMacroCompilePythonScript puts them at <module folder>/training/ and installs them
    loop = re.search(
        r"foreach\(script IN LISTS TRAINING_PYTHON_SCRIPTS\)(.*?)endforeach", text, re.S
    )
    assert loop, "the training files are not added to the module's scripts"
    body = " ".join(loop.group(1).split())
    assert "configure_file( ${CMAKE_CURRENT_SOURCE_DIR}/../training/${script}" in body
    assert "${CMAKE_CURRENT_BINARY_DIR}/training/${script} COPYONLY )" in body
    assert "list(APPEND MODULE_PYTHON_SCRIPTS ${CMAKE_CURRENT_BINARY_DIR}/training/${script})" in (
        body
    )
    assert text.index("endforeach()") < text.index("slicerMacroBuildScriptedModule(")


def test_module_cmake_builds_tests_and_installs_the_model_registry():
    text, _, resources = module_cmake()
    assert "slicerMacroBuildScriptedModule(" in text and "WITH_GENERIC_TESTS" in text
    assert re.search(r"if\(BUILD_TESTING\)\s+#.*\n\s+slicer_add_python_unittest\(SCRIPT", text)
    registry = ["segresmamba/weights/models.json", "segresmamba/weights/models.schema.json"]
    assert set(registry) <= set(resources)
    assert all((MODULE_DIR / name).is_file() for name in registry)
    assert not (REPO / "Resources" / "models.json").exists(), "one registry, inside the package"
    from segresmamba.weights import registry as engine_registry

    # one lookup rule for Slicer, wheels and checkouts: package data beside the weights module
    assert engine_registry._resource_candidates("models.json") == [
        MODULE_DIR / "segresmamba" / "weights" / "models.json"
    ]


def test_extension_metadata_is_complete():
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    settings = extension_settings()
    for field in (
        "HOMEPAGE",
        "CATEGORY",
        "CONTRIBUTORS",
        "DESCRIPTION",
        "ICONURL",
        "SCREENSHOTURLS",
        "DEPENDS",
    ):
        assert settings.get(f"EXTENSION_{field}"), f"EXTENSION_{field} is missing or empty"
    assert settings["EXTENSION_CATEGORY"] == "Segmentation"
    assert settings["EXTENSION_DEPENDS"] == "PyTorch"
    for line in (
        "find_package(Slicer REQUIRED)",
        "include(${Slicer_USE_FILE})",
        "add_subdirectory(SegResMambaSlicer)",
        "include(${Slicer_EXTENSION_GENERATE_CONFIG})",
        "include(${Slicer_EXTENSION_CPACK})",
    ):
        assert line in text
    name = re.search(r"project\((\w+)\)", text).group(1)
    assert not name.startswith("Slicer"), "the Extensions Index refuses names starting with Slicer"
    assert (REPO / "LICENSE").is_file()
    # the icon and screenshots the catalog shows are files of this repository
    urls = [settings["EXTENSION_ICONURL"], *settings["EXTENSION_SCREENSHOTURLS"].split()]
    for url in urls:
        path = REPO / url.split("/main/", 1)[1]
        assert path.is_file() and path.suffix in (".png", ".jpg"), url


def test_extensions_index_entry():
    name = re.search(
        r"project\((\w+)\)", (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    ).group(1)
    entry = json.loads((REPO / "docs" / f"{name}.json").read_text(encoding="utf-8"))
    allowed = {
        "$schema",
        "category",
        "scm_url",
        "scm_revision",
        "scm_type",
        "build_dependencies",
        "dicom_support_rule",
        "build_subdirectory",
        "enabled",
        "tier",
    }
    assert {"$schema", "category", "scm_url"} <= set(entry) <= allowed
    assert "slicer-extension-catalog-entry-schema" in entry["$schema"]
    settings = extension_settings()
    assert entry["category"] == settings["EXTENSION_CATEGORY"]
    assert entry["build_dependencies"] == settings["EXTENSION_DEPENDS"].split()
    assert isinstance(entry["tier"], int) and 1 <= entry["tier"] <= 5


def test_icon_is_a_128_pixel_png():
    header = (MODULE_DIR / "Resources" / "Icons" / "SegResMambaSlicer.png").read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", header[16:24]) == (128, 128)


def test_installed_layout_runs_the_engine(tmp_path):
    """Copy exactly what CMake installs into a qt-scripted-modules folder and run the engine
    from there: a file missing from the lists fails here as it would in Slicer."""
    _, scripts, resources = module_cmake()
    target = tmp_path / "qt-scripted-modules"
    copies = [(MODULE_DIR / relative, target / relative) for relative in scripts + resources]
    copies += [
        (REPO / "training" / name, target / "training" / name) for name in training_scripts()
    ]
    for source, copy in copies:
        if source.is_file():
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, copy)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGRESMAMBA_")}
    env.update(PYTHONPATH=str(target), SEGRESMAMBA_HOME=str(tmp_path / "cache"))
    code = (
        "import segresmamba, SegResMambaSlicerLib.process as p; from segresmamba.weights import "
        "models_json_path; from segresmamba.tasks import list_tasks; "
        "print(segresmamba.__file__); print(models_json_path()); print(len(list_tasks())); "
        "print(p.training_root()); import training.loop, training.train; print(training.__file__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, encoding="utf-8"
    )
    assert out.returncode == 0, out.stderr
    package, registry, tasks, training_root, training = out.stdout.split()
    assert Path(package).is_relative_to(target)
    # the child finds the shipped training code in the module folder itself
    assert Path(training_root) == target and Path(training) == target / "training" / "__init__.py"
    assert Path(registry) == target / "segresmamba" / "weights" / "models.json"
    assert int(tasks) >= 4
    listing = subprocess.run(
        [sys.executable, "-m", "segresmamba", "models", "list"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        encoding="utf-8",
    )
    assert listing.returncode == 0 and "phantom-demo" in listing.stdout, listing.stderr


# cmake_minimum_required of Slicer's extension template, Utilities/Templates/Extensions/Default/
# CMakeLists.txt, at the oldest and newest supported tags
SLICER_TEMPLATE_CMAKE = {"5.10.0": ("3.20.6", "3.22.6"), "5.12.3": ("3.28.0", "3.28.0")}


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def test_cmake_minimum_follows_slicers_extension_templates():
    """Issue 20, point 21: the minimum is 5.10's template's (the oldest supported Slicer), the
    policy version reaches 5.12's."""
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    low, high = re.search(
        r"^cmake_minimum_required\(VERSION ([\d.]+)\.\.\.([\d.]+) FATAL_ERROR\)", text, re.M
    ).groups()
    assert _release(low) == _release(SLICER_TEMPLATE_CMAKE["5.10.0"][0])
    assert _release(high) >= max(_release(top) for _, top in SLICER_TEMPLATE_CMAKE.values())


def test_extension_package_carries_our_license_and_readme():
    """Point 21: UseSlicer.cmake sets EXTENSION_LICENSE_FILE/EXTENSION_README_FILE to Slicer's
    own files unless they are defined before it is included; CPack ships them."""
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    settings = extension_settings()
    for key, name in (
        ("EXTENSION_LICENSE_FILE", "LICENSE"),
        ("EXTENSION_README_FILE", "README.md"),
    ):
        path = Path(settings[key].replace("${CMAKE_CURRENT_SOURCE_DIR}", str(REPO)))
        assert path == REPO / name and path.is_file()
        assert text.index(f"set({key} ") < text.index("include(${Slicer_USE_FILE})")


def test_readme_names_every_package_the_module_installs():
    """Point 21: the README's list of what the module installs in Slicer (numba was missing)."""
    from SegResMambaSlicerLib.dependencies import REQUIREMENTS, bundled_with_slicer

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### First use: Python packages") :]
    sentence = " ".join(section.split("in Slicer's Python.")[0].split())
    shown = {"torch": "PyTorch", "monai": "MONAI"}
    missing = [
        r.distribution
        for r in REQUIREMENTS
        if not bundled_with_slicer(r) and shown.get(r.distribution, r.distribution) not in sentence
    ]
    assert not missing, f"README's package list lacks {missing}"


def test_documented_reload_runs_the_edited_lib_and_engine(tmp_path):
    """Point 21: Slicer's Reload re-executes only the module file (util.reloadScriptedModule);
    the snippet in docs/slicer.md makes the next import of the Lib and engine run the files."""
    doc = (REPO / "docs" / "slicer.md").read_text(encoding="utf-8")
    after = doc[doc.index("While developing") :]
    snippet = re.search(r"```python\n(.*?)```", after, re.S).group(1)
    snippet = "\n".join(
        line[2:] if line.startswith("  ") else line for line in snippet.splitlines()
    )
    code = (
        "import sys, types\n"
        "import SegResMambaSlicerLib.dependencies, segresmamba.tasks\n"
        "old = sys.modules['SegResMambaSlicerLib.dependencies']\n"
        "calls = []\n"
        "slicer = types.SimpleNamespace(util=types.SimpleNamespace(reloadScriptedModule=calls.append))\n"
        f"exec({snippet!r}, {{'slicer': slicer}})\n"
        "left = [n for n in sys.modules if n.split('.')[0] in ('SegResMambaSlicerLib', 'segresmamba')]\n"
        "import SegResMambaSlicerLib.dependencies as fresh\n"
        "print(calls, left, fresh is not old)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(MODULE_DIR)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, encoding="utf-8"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["['SegResMambaSlicer']", "[]", "True"]

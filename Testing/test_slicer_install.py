"""The module's install plan against the Python packages that Slicer 5.10.0 and 5.12.3 really
ship (``helpers_slicer_python.SLICER_PYTHON``, from Slicer's requirement files), resolved by pip.

The resolution uses pip's own resolver (``pip install --dry-run --no-index``) on a local folder of
metadata-only wheels: Slicer's packages at Slicer's versions, and every package our plan pulls in
at the version installed in this test environment, with that version's real ``Requires-Dist``
(environment markers evaluated for Python 3.12 on Linux, as in Slicer 5.10/5.12). All of those
versions are published releases, so a resolution found here is one that pip can find online.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib
from helpers_slicer_python import LIGHT_THE_TORCH, SLICER_PYTHON, SLICER_WITHOUT_METADATA
from packaging.requirements import Requirement as PipRequirement

from SegResMambaSlicerLib import dependencies
from SegResMambaSlicerLib.dependencies import Missing, distribution_key, install_plan

REPO = Path(__file__).resolve().parents[1]

MARKERS = {
    "python_version": "3.12",
    "python_full_version": "3.12.10",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "extra": "",
}


def slicer_after_pytorch(tag: str) -> dict[str, str]:
    """Slicer's Python at ``tag`` once PyTorch Utils has installed PyTorch (this environment's
    version): the state in which the module's pip call runs."""
    return {**SLICER_PYTHON[tag], "torch": importlib.metadata.version("torch")}


def module_plan(installed: dict[str, str]):
    """The plan the module makes in a Slicer Python holding ``installed``."""
    have = {distribution_key(name) for name in installed}
    missing = [
        Missing(r)
        for r in dependencies.REQUIREMENTS
        if distribution_key(r.distribution) not in have
    ]
    return install_plan(missing, installed)


def test_module_requires_nothing_for_dicom_seg_and_agrees_with_pyproject():
    """Issue 20, point 8: on Slicer 5.10.0 (pydicom 2.4.4) highdicom cannot install, and one
    pip call asking for it installed nothing at all. The module asks for neither."""
    declared = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    specs = [r.spec for r in (*dependencies.REQUIREMENTS, *dependencies.DICOM_SEG_REQUIREMENTS)]
    assert sorted(specs) == sorted(declared["dependencies"])
    module = {distribution_key(r.distribution) for r in dependencies.REQUIREMENTS}
    assert not module & {"pydicom", "highdicom"}
    from segresmamba.io.dicom_packages import DICOM_SEG_PACKAGES

    assert {
        r.distribution: (r.minimum, r.below) for r in dependencies.DICOM_SEG_REQUIREMENTS
    } == DICOM_SEG_PACKAGES
    # the requirements Slicer ships (presence only, never installed) are exactly these
    shipped = {distribution_key(n) for tag in SLICER_PYTHON.values() for n in tag}
    assert {k for k in module if k in shipped} == dependencies.SLICER_BUNDLED


@pytest.mark.parametrize("tag", sorted(SLICER_PYTHON))
def test_plan_never_asks_for_what_a_pin_forbids(tag):
    """Point 8: no requirement of ours names a package Slicer pins, and every package Slicer
    ships is pinned at Slicer's version, at either tag."""
    installed = slicer_after_pytorch(tag)
    plan = module_plan(installed)
    assert plan.torch is None and plan.not_installable == []
    asked = {distribution_key(re.split(r"[<>=]", spec)[0]) for spec in plan.pip}
    assert asked == {
        "monai",
        "einops",
        "safetensors",
        "nibabel",
        "pynrrd",
        "tqdm",
        "jsonschema",
    } | {"numba"}
    pins = dict(pin.split("==") for pin in plan.pinned)
    assert pins == installed  # everything installed, at its version, nothing else
    assert not asked & {distribution_key(name) for name in pins}


def stub_wheel(folder: Path, name: str, version: str, requires=()) -> None:
    """A wheel holding only metadata: all pip's resolver reads."""
    stem = re.sub(r"[-_.]+", "_", name)
    info = f"{stem}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(folder / f"{stem}-{version}-py3-none-any.whl", "w") as wheel:
        wheel.writestr(f"{info}/METADATA", metadata)
        wheel.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        wheel.writestr(f"{info}/RECORD", "")


def real_requirements(name: str) -> list[str]:
    """This environment's installed version's Requires-Dist, markers evaluated for Slicer."""
    found = []
    for text in importlib.metadata.requires(name) or []:
        requirement = PipRequirement(text)
        if requirement.marker is None or requirement.marker.evaluate(MARKERS):
            requirement.marker = None
            found.append(str(requirement))
    return found


def local_index(folder: Path, installed: dict[str, str], wanted: list[str]) -> set[str]:
    """Stub wheels for ``installed`` (at their versions, as installed) and for everything
    ``wanted`` pulls in (this environment's versions, real dependencies). Returns the names."""
    folder.mkdir()
    present = {distribution_key(n): (n, v) for n, v in installed.items()}
    for name, version in present.values():
        stub_wheel(folder, name, version)
    queue, seen = [PipRequirement(w).name for w in wanted], set(present)
    while queue:
        name = queue.pop()
        if distribution_key(name) in seen:
            continue
        seen.add(distribution_key(name))
        requires = real_requirements(name)
        stub_wheel(folder, name, importlib.metadata.version(name), requires)
        queue += [PipRequirement(r).name for r in requires]
    return seen


def pip_environment() -> dict[str, str]:
    """This environment without pip settings: only the local folder may be searched."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PIP_")}
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def pip_resolves(tmp_path: Path, installed: dict[str, str], packages: list[str], pins: list[str]):
    """Real pip's resolution of ``pip install -c pins packages`` in a Python holding
    ``installed``: (returncode, {name: version} it would install, stderr)."""
    names = local_index(tmp_path / "index", installed, packages)
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("\n".join(pins) + "\n", encoding="utf-8")
    report = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-index",
         "--find-links", str(tmp_path / "index"), "--report", str(report), "--quiet",
         "-c", str(constraints), *packages],
        capture_output=True, encoding="utf-8", env=pip_environment(), timeout=120,
    )  # fmt: skip
    assert not names & SLICER_WITHOUT_METADATA, names
    if result.returncode:
        return result.returncode, {}, result.stderr
    chosen = json.loads(report.read_text(encoding="utf-8"))["install"]
    return 0, {i["metadata"]["name"]: i["metadata"]["version"] for i in chosen}, result.stderr


@pytest.mark.parametrize("tag", sorted(SLICER_PYTHON))
def test_pip_resolves_the_plan_without_touching_slicer(tag, tmp_path):
    """Point 8, by pip itself: the module's one pip call resolves under the pins at each tag,
    and keeps every package already there at its version."""
    installed = slicer_after_pytorch(tag)
    plan = module_plan(installed)
    code, chosen, stderr = pip_resolves(tmp_path, installed, plan.pip, plan.pinned)
    assert code == 0, stderr
    for name, version in installed.items():  # pip "installs" them only as they are
        assert chosen.get(name, version) == version, name
    assert {"monai", "numba", "llvmlite", "jsonschema"} <= {distribution_key(n) for n in chosen}


@pytest.mark.parametrize("tag", sorted(SLICER_PYTHON))
def test_pip_resolves_pytorch_when_pytorch_utils_cannot(tag, tmp_path):
    """Point 15: where light-the-torch cannot install (5.12.3), PyTorch comes from pip under the
    same pins; its dependencies (typing_extensions, setuptools, ...) accept Slicer's versions."""
    installed = dict(SLICER_PYTHON[tag])
    pins = dependencies.constraints_for(["torch>=2.1"], installed)
    code, chosen, stderr = pip_resolves(tmp_path, installed, ["torch>=2.1"], pins)
    assert code == 0, stderr
    assert "torch" in chosen
    for name, version in installed.items():
        assert chosen.get(name, version) == version, name


def test_highdicom_cannot_join_the_plan_on_slicer_5_10(tmp_path):
    """Why point 8 was a blocker, shown by pip: asking for highdicom with Slicer 5.10.0's pins
    fails, so one pip call with it installed nothing."""
    installed = slicer_after_pytorch("5.10.0")
    plan = module_plan(installed)
    code, _, stderr = pip_resolves(
        tmp_path, installed, [*plan.pip, "highdicom>=0.25,<0.29"], plan.pinned
    )
    assert code != 0 and "Cannot install highdicom" in stderr, stderr  # it needs pydicom>=3.0.1


@pytest.mark.parametrize("tag, resolves", [("5.10.0", True), ("5.12.3", False)])
def test_light_the_torch_under_slicers_pins(tag, resolves, tmp_path):
    """Point 15: light-the-torch (what PyTorch Utils installs first) needs pip<26.1. With Slicer's
    pip pinned it installs on 5.10.0 (pip 25.1.1) and cannot on 5.12.3 (pip 26.1.1), where an
    unpinned install would downgrade Slicer's pip; the installer then takes PyTorch from pip."""
    installed = SLICER_PYTHON[tag]
    (tmp_path / "index").mkdir()
    name, version, requires = LIGHT_THE_TORCH
    stub_wheel(tmp_path / "index", name, version, requires)
    for dist, dist_version in installed.items():
        stub_wheel(tmp_path / "index", dist, dist_version)
    pins = dependencies.constraints_for(["light-the-torch>=0.5"], installed)
    (tmp_path / "c.txt").write_text("\n".join(pins) + "\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-index",
         "--find-links", str(tmp_path / "index"), "--quiet", "-c", str(tmp_path / "c.txt"),
         "light-the-torch>=0.5"],
        capture_output=True, encoding="utf-8", env=pip_environment(), timeout=120,
    )  # fmt: skip
    assert (result.returncode == 0) is resolves, result.stderr


def test_dicom_seg_output_says_what_slicer_5_10_lacks(shared_data, tmp_path):
    """Point 8: without pydicom 3 (Slicer 5.10.0's Python has pydicom 2.4.4) the command line
    refuses DICOM SEG output before any work, in one line, exit 2, and writes nothing."""
    shadow = tmp_path / "site" / "pydicom-2.4.4.dist-info"  # what Slicer 5.10.0 has installed
    shadow.mkdir(parents=True)
    (shadow / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: pydicom\nVersion: 2.4.4\n", encoding="utf-8"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shadow.parent), *sys.path])}
    out = tmp_path / "result.dcm"
    series = shared_data / "ct-abdomen" / "example_ct_dicom"
    result = subprocess.run(
        [sys.executable, "-m", "segresmamba", "segment", "-t", "phantom", "-i", str(series),
         "-o", str(out)],
        capture_output=True, encoding="utf-8", env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "error: DICOM SEG output needs pydicom>=3.0,<4 and highdicom>=0.25,<0.29, and this "
        "Python has pydicom 2.4.4 (Slicer 5.10 ships pydicom 2.4.4 and no highdicom; Slicer 5.12 "
        "ships both); write .seg.nrrd or .nii.gz instead, or install them with pip in a Python "
        "of your own"
    ], result.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == [tmp_path / "site"]

"""The install button's work inside Slicer, and the self-test under CTest, with Slicer's side
modelled on Slicer's own code (``slicer.util.pip_install`` at v5.10.0 and, through
``slicer.packaging``, at v5.12.3; PyTorch Utils' ``installTorch``), in the real ``slicer`` package
of slicer-core. The pip outcome for light-the-torch is the one real pip gives in
``test_slicer_install.py::test_light_the_torch_under_slicers_pins``."""

from __future__ import annotations

import ast
import importlib.machinery
import io
import subprocess
import sys
import types
import unittest
from pathlib import Path

import pytest
import slicer
import slicer.util
from helpers_slicer_python import SLICER_PYTHON

from SegResMambaSlicerLib import dependencies, installer
from SegResMambaSlicerLib.dependencies import Missing, install_plan, version_tuple

MODULE_FILE = Path(__file__).resolve().parents[1] / "SegResMambaSlicer" / "SegResMambaSlicer.py"


class FakeApp:
    """``slicer.app``: the application, in or out of testing mode (``--testing``)."""

    def __init__(self, testing: bool = False):
        self.testing = testing

    def testingEnabled(self) -> bool:  # noqa: N802 - Slicer's name
        return self.testing

    def setOverrideCursor(self, cursor) -> None:  # noqa: N802
        pass

    def restoreOverrideCursor(self) -> None:  # noqa: N802
        pass


def module(name: str, **attributes) -> types.ModuleType:
    """A module that ``importlib.util.find_spec`` finds."""
    made = types.ModuleType(name)
    made.__spec__ = importlib.machinery.ModuleSpec(name, None)
    made.__dict__.update(attributes)
    return made


class SlicerPython:
    """Slicer at ``tag``: its pip_install (and its error dialog from 5.11 on), its installed
    packages, PyTorch Utils; records pip calls, dialogs and PyTorch installs."""

    def __init__(self, monkeypatch, tag: str, pip_fails: bool = False, torch_fails=False):
        self.tag, self.pip_fails, self.torch_fails = tag, pip_fails, torch_fails
        self.pip_calls: list[tuple[list[str], list[str], dict]] = []
        self.dialogs: list[str] = []
        self.torch_installs: list[dict] = []
        monkeypatch.setattr(slicer, "app", FakeApp(), raising=False)
        monkeypatch.setitem(sys.modules, "qt", module("qt", Qt=types.SimpleNamespace(WaitCursor=3)))
        monkeypatch.setattr(
            slicer.util, "errorDisplay", lambda text, **_: self.dialogs.append(text)
        )
        monkeypatch.setattr(
            dependencies, "installed_distributions", lambda: dict(SLICER_PYTHON[tag])
        )
        logic = type("PyTorchUtilsLogic", (), {"installTorch": self.install_torch})
        monkeypatch.setitem(
            sys.modules, "PyTorchUtils", module("PyTorchUtils", PyTorchUtilsLogic=logic)
        )
        if tag == "5.10.0":  # pip_install(requirements): no keywords, no dialog, raises on failure
            monkeypatch.setattr(
                slicer.util, "pip_install", lambda requirements: self.pip(requirements)
            )
        else:
            monkeypatch.setitem(sys.modules, "slicer.packaging", module("slicer.packaging"))
            monkeypatch.setattr(slicer.util, "pip_install", self.pip)

    def pip(self, requirements: list[str], show_progress: bool = True, requester=None) -> None:
        index = requirements.index("-c")
        with open(requirements[index + 1], encoding="utf-8") as file:
            pins = file.read().split()
        packages = requirements[index + 2 :]
        self.pip_calls.append(
            (packages, pins, {"show_progress": show_progress, "requester": requester})
        )
        pip_version = next(p.split("==")[1] for p in pins if p.startswith("pip=="))
        ltt_conflict = "light-the-torch>=0.5" in packages and version_tuple(pip_version) >= (26, 1)
        if self.pip_fails or ltt_conflict:
            if self.tag != "5.10.0" and show_progress and not slicer.app.testingEnabled():
                slicer.util.errorDisplay("Package installation failed.")  # packaging.py, 5.12.3
            raise subprocess.CalledProcessError(1, "pip install")

    def install_torch(self, askConfirmation, torchVersionRequirement):  # noqa: N803
        self.torch_installs.append({"requirement": torchVersionRequirement})
        return None if self.torch_fails else module("torch")


def everything_missing():
    return install_plan(
        [Missing(r) for r in dependencies.REQUIREMENTS if r.distribution != "numpy"]
    )


def test_slicer_5_10_gets_light_the_torch_under_the_pins_then_pytorch_utils(monkeypatch):
    """Point 15: light-the-torch is installed first, with Slicer's packages (pip 25.1.1
    included) pinned, so PyTorch Utils never installs it unpinned; then the rest, pinned too."""
    fake = SlicerPython(monkeypatch, "5.10.0")
    plan = everything_missing()
    assert installer.install_and_report(plan) and fake.dialogs == []
    (ltt, ltt_pins, _), (rest, rest_pins, _) = fake.pip_calls
    assert ltt == ["light-the-torch>=0.5"] and "pip==25.1.1" in ltt_pins
    assert fake.torch_installs == [{"requirement": ">=2.1"}]
    assert rest == plan.pip and "pydicom==2.4.4" in rest_pins and "numpy==2.0.2" in rest_pins
    assert len(rest_pins) == len(SLICER_PYTHON["5.10.0"])


def test_slicer_5_12_keeps_its_pip_and_takes_pytorch_from_pip(monkeypatch):
    """Point 15: on Slicer 5.12.3 (pip 26.1.1) no light-the-torch can install without
    downgrading pip, so PyTorch Utils is not asked; PyTorch comes from pip, pip stays 26.1.1, and
    the failed try shows no dialog (``show_progress=False``)."""
    fake = SlicerPython(monkeypatch, "5.12.3")
    plan = everything_missing()
    assert "no light-the-torch release accepts Slicer's pip" in plan.summary(True)
    assert installer.install_and_report(plan) and fake.dialogs == []
    (ltt, _, quiet), (torch, pins, shown), (rest, _, _) = fake.pip_calls
    assert ltt == ["light-the-torch>=0.5"] and quiet["show_progress"] is False
    assert torch == ["torch>=2.1"] and "pip==26.1.1" in pins and shown["requester"] == "SegResMamba"
    assert fake.torch_installs == [] and rest == plan.pip


@pytest.mark.parametrize("tag", sorted(SLICER_PYTHON))
def test_a_pip_failure_shows_one_dialog(monkeypatch, tag):
    """Point 16: Slicer 5.12.3's pip_install shows "Package installation failed." with pip's log,
    then raises; the module adds no second dialog there, and shows its own on 5.10.0."""
    fake = SlicerPython(monkeypatch, tag, pip_fails=True)
    plan = install_plan([Missing(dependencies.REQUIREMENTS[1])])  # monai
    assert installer.install_and_report(plan) is False
    assert len(fake.dialogs) == 1, fake.dialogs
    if tag == "5.10.0":
        assert fake.dialogs[0].startswith("Installing the packages failed: pip exited with code 1")
    else:
        assert fake.dialogs == ["Package installation failed."]


def test_a_pytorch_utils_failure_shows_one_dialog(monkeypatch):
    fake = SlicerPython(monkeypatch, "5.10.0", torch_fails=True)
    assert installer.install_and_report(everything_missing()) is False
    assert fake.dialogs == [
        "Installing the packages failed:\n\nPyTorch was not installed; see the PyTorch Utils module"
    ]


def module_test_case(fake_slicer) -> type:
    """The module's own ``SegResMambaSlicerTest`` class, compiled from the module file with
    Slicer's base class stood in by ``unittest.TestCase``."""
    tree = ast.parse(MODULE_FILE.read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if getattr(n, "name", "") == "SegResMambaSlicerTest")
    base = type("ScriptedLoadableModuleTest", (unittest.TestCase,), {"delayDisplay": print})
    namespace = {"slicer": fake_slicer, "ScriptedLoadableModuleTest": base, "__name__": "mod"}
    exec(compile(ast.Module([cls], []), str(MODULE_FILE), "exec"), namespace)
    return namespace["SegResMambaSlicerTest"]


@pytest.mark.parametrize("testing", [True, False])
def test_ctest_skips_the_self_test_without_the_packages(monkeypatch, testing):
    """Point 17: under CTest (``--testing``, Slicer's unittest runner) on a factory that never
    installs PyTorch the self-test is skipped, saying why; a skip passes there. In *Reload and
    Test* it still fails with the reason, since Slicer shows a skip there as a failure."""
    monkeypatch.setattr(
        dependencies, "find_missing", lambda: [Missing(dependencies.REQUIREMENTS[0])]
    )
    scene = types.SimpleNamespace(Clear=lambda: None)
    test_case = module_test_case(types.SimpleNamespace(app=FakeApp(testing), mrmlScene=scene))
    suite = unittest.TestLoader().loadTestsFromTestCase(test_case)
    result = unittest.TextTestRunner(stream=io.StringIO()).run(suite)
    if testing:
        assert result.wasSuccessful() and len(result.skipped) == 1
        reason = result.skipped[0][1]
        assert reason.startswith("SegResMamba self-test skipped: Python packages are not installed")
        assert "(torch)" in reason and "extensions factory" in reason
    else:
        assert len(result.failures) == 1 and not result.skipped
        assert "self-test cannot run: Python packages are missing" in result.failures[0][1]

"""A scene saved with a task this computer lacks (issue 20, point 10), on real MRML: the scene is
written and loaded by Slicer's own scene code (slicer-core), into a parameter node made as
``ScriptedLoadableModuleLogic.createParameterNode`` makes it. slicer-core has no Qt, so the
parameter node wrapper's combo box connector is stood in for by an observer that checks each
value as ``QComboBoxToStringableConnector.write`` does (Slicer 5.10.0 and 5.12.3)."""

from __future__ import annotations

import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core (the test extra) is not installed")

import vtk  # noqa: E402

from SegResMambaSlicerLib.saved_choices import (  # noqa: E402
    ChoiceGuard,
    extend_choices,
    repair_choices,
)

MODULE = "SegResMambaSlicer"
TASKS = ["btcv", "spleen", "brats"]
DEVICES = ["auto", "cpu", "gpu"]


def parameter_node(scene):
    """The module's singleton parameter node, as the scripted module logic creates it."""
    node = scene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
    node.UnRegister(None)
    node.SetSingletonTag(MODULE)
    node.SetAttribute("ModuleName", MODULE)
    node.SetName(scene.GenerateUniqueName(MODULE))
    return scene.AddNode(node)


def saved_scene(tmp_path, task: str) -> str:
    """A scene file saved by Slicer's scene code whose parameter node names ``task``."""
    scene = slicer.vtkMRMLScene()
    node = parameter_node(scene)
    node.SetParameter("task", task)
    node.SetParameter("device", "gpu")
    path = tmp_path / "saved.mrml"
    scene.SetURL(str(path))
    assert scene.Commit()
    return str(path)


class ComboConnector:
    """What the wrapper's combo box connector does on every change of the node: write the
    saved value into the combo box, or raise for a value outside the choices."""

    def __init__(self, node, name, choices):
        self.seen, self.failures = [], []
        self.node, self.name, self.choices = node, name, choices
        node.AddObserver(vtk.vtkCommand.ModifiedEvent, self.write)  # priority 0, as the wrapper

    def write(self, caller, event):
        value = self.node.GetParameter(self.name)
        self.seen.append(value)
        if value not in self.choices:
            self.failures.append(f"Unable to find value {value} in choices {self.choices}")


def load(scene, path):
    scene.SetURL(path)
    assert scene.Import()


def test_loading_a_scene_with_an_unknown_task_falls_back_and_says_so(tmp_path):
    path = saved_scene(tmp_path, "mytumour-from-elsewhere")
    # without the guard: the connector gets the unknown task (what breaks the panel today)
    scene = slicer.vtkMRMLScene()
    node = parameter_node(scene)
    node.SetParameter("task", "btcv")
    unguarded = ComboConnector(node, "task", TASKS)
    load(scene, path)
    assert unguarded.failures, "the saved scene did not reach the parameter node"

    scene = slicer.vtkMRMLScene()
    node = parameter_node(scene)
    node.SetParameter("task", "btcv")
    messages = []
    guard = ChoiceGuard(node, {"task": TASKS, "device": DEVICES}, messages.append)
    connector = ComboConnector(node, "task", TASKS)
    load(scene, path)
    assert scene.GetSingletonNode(MODULE, "vtkMRMLScriptedModuleNode") is node
    assert node.GetParameter("task") == "btcv" and node.GetParameter("device") == "gpu"
    assert connector.failures == [] and "mytumour-from-elsewhere" not in connector.seen
    assert messages == [
        "the scene names task 'mytumour-from-elsewhere', which this computer does not have "
        "(a task imported elsewhere?); 'btcv' is selected instead"
    ]
    guard.remove()
    node.SetParameter("task", "gone")
    assert node.GetParameter("task") == "gone" and len(messages) == 1  # removed: no longer kept


def test_the_parameter_node_is_repaired_before_the_panel_connects(tmp_path):
    """setup, enter and scene close get the parameter node first: unknown values are replaced,
    known ones and parameters not saved yet are left alone."""
    scene = slicer.vtkMRMLScene()
    load(scene, saved_scene(tmp_path, "ghost"))
    node = scene.GetSingletonNode(MODULE, "vtkMRMLScriptedModuleNode")
    node.SetParameter("device", "tpu")
    messages = repair_choices(node, {"task": TASKS, "device": DEVICES, "model": ["x"]})
    assert [m.split(",")[0] for m in messages] == [
        "the scene names task 'ghost'",
        "the scene names device 'tpu'",
    ]
    assert node.GetParameter("task") == "btcv" and node.GetParameter("device") == "auto"
    assert not node.HasParameter("model")
    assert repair_choices(node, {"task": TASKS, "device": DEVICES}) == []


def test_a_task_imported_since_start_becomes_a_choice_in_the_same_list():
    choices = list(TASKS)
    same = choices
    extend_choices(choices, ["btcv", "mytumour", "spleen"])
    assert same is choices and choices == [*TASKS, "mytumour"]

"""The module's Qt Designer file: it loads (PySide6, offscreen), holds every widget the module
code names, and binds every widget to a real parameter of the parameter node."""

from __future__ import annotations

import ast
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

MODULE_DIR = Path(__file__).resolve().parents[1] / "SegResMambaSlicer"
MODULE_FILE = MODULE_DIR / "SegResMambaSlicer.py"
TEACH_FILE = MODULE_DIR / "SegResMambaSlicerLib" / "teach_panel.py"  # the Teach section's glue
UI_FILE = MODULE_DIR / "Resources" / "UI" / "SegResMambaSlicer.ui"
MAX_INPUTS = 4  # SegResMambaSlicerLib.panel.MAX_INPUTS; checked below

# the parameterNodeWrapper connects these widget classes to these parameter types exactly
CONNECTOR_CLASSES = {
    "str": {"QComboBox", "QLineEdit"},
    "bool": {"QCheckBox"},
    "vtkMRMLScalarVolumeNode": {"qMRMLNodeComboBox"},
    "vtkMRMLSegmentationNode": {"qMRMLNodeComboBox"},
}


def names_used_by_module() -> set[str]:
    """Every ``ui.<name>`` of the module and its Teach section, with
    ``getattr(self.ui, f"name{index}")`` expanded per input row."""
    names = set()
    for path in (MODULE_FILE, TEACH_FILE):
        source = path.read_text(encoding="utf-8")
        names.update(re.findall(r"\bui\.(\w+)", source))
        for stem in re.findall(r'getattr\(self\.ui, f"(\w+)\{', source):
            names.update(f"{stem}{i}" for i in range(MAX_INPUTS))
    return names


def parameters() -> dict[str, str]:
    """The parameter node's fields and their (unannotated) types, read from the module's AST."""
    tree = ast.parse(MODULE_FILE.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(
            getattr(d, "id", "") == "parameterNodeWrapper" for d in node.decorator_list
        ):
            fields = {}
            for item in node.body:
                if isinstance(item, ast.AnnAssign):
                    annotation = item.annotation
                    if isinstance(annotation, ast.Subscript):  # Annotated[str, Choice(...)]
                        annotation = annotation.slice.elts[0]
                    fields[item.target.id] = ast.unparse(annotation)
            return fields
    raise AssertionError("no @parameterNodeWrapper class in the module")


@pytest.fixture(scope="module")
def loaded():
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    qtcore = pytest.importorskip("PySide6.QtCore", reason="PySide6 (the test extra) is missing")
    from PySide6.QtUiTools import QUiLoader
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    ui_file = qtcore.QFile(str(UI_FILE))
    assert ui_file.open(qtcore.QIODevice.ReadOnly)
    widget = QUiLoader().load(ui_file)
    ui_file.close()
    assert widget is not None, "QUiLoader could not load the .ui file"
    yield widget
    widget.deleteLater()
    app.processEvents()


def test_every_widget_the_module_names_exists(loaded):
    from PySide6.QtCore import QObject

    missing = [
        name for name in sorted(names_used_by_module()) if loaded.findChild(QObject, name) is None
    ]
    assert not missing, f"the module uses widgets the .ui lacks: {missing}"


def test_max_inputs_agrees_with_the_lib():
    from SegResMambaSlicerLib.panel import MAX_INPUTS as lib_max

    assert lib_max == MAX_INPUTS


def test_bound_widgets_match_parameters_and_connector_classes():
    tree = ET.parse(UI_FILE)
    fields = parameters()
    bound = {}
    for widget in tree.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.find("string").text] = widget.get("class")
    assert set(bound) <= set(fields), (
        f"widgets bound to unknown parameters: {set(bound) - set(fields)}"
    )
    # the model is set by Download/Import only; the version selector lists a task's versions,
    # which change at run time (a Choice's list is fixed when the module loads)
    assert set(fields) - set(bound) == {"model", "modelVersion"}
    for name, widget_class in bound.items():
        allowed = CONNECTOR_CLASSES[fields[name]]
        assert widget_class in allowed, f"{name}: {widget_class} cannot bind a {fields[name]}"


def test_custom_widgets_are_declared_with_their_base_class():
    tree = ET.parse(UI_FILE)
    declared = {c.find("class").text: c.find("extends").text for c in tree.iter("customwidget")}
    assert all(declared.values()), "every custom widget needs <extends>"
    used = {w.get("class") for w in tree.iter("widget")}
    slicer_classes = {c for c in used if c.startswith(("ctk", "qMRML", "qSlicer"))}
    assert slicer_classes <= set(declared), f"undeclared: {slicer_classes - set(declared)}"


def test_module_uses_only_names_the_lib_has():
    """The module cannot run outside Slicer, so check statically that what it imports from the
    Lib, and every ``dependencies.<name>`` it calls, exists."""
    import importlib

    tree = ast.parse(MODULE_FILE.read_text(encoding="utf-8"))
    used: list[tuple[str, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "SegResMambaSlicerLib"
        ):
            used += [(node.module, alias.name) for alias in node.names]
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "dependencies"
        ):
            used.append(("SegResMambaSlicerLib.dependencies", node.attr))
    assert len(used) > 10
    for module_name, name in used:
        module = importlib.import_module(module_name)
        if not hasattr(module, name):
            importlib.import_module(f"{module_name}.{name}")  # a submodule, e.g. dependencies

"""The Slicer module with a model of the user's own task, on real MRML (slicer-core): after a
real ``segresmamba models import`` of a checkpoint whose header carries the task, the module's
task list has it, its input rows are named after the dataset's channels, and the logic builds
segmentation nodes named and coloured from its labels, on the real BraTS 2013 scans."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
from helpers_owndata import OWN_TASK, PALETTE, own_checkpoint

slicer = pytest.importorskip("slicer", reason="slicer-core (the test extra) is not installed")

from segresmamba.io import terminology_entry  # noqa: E402
from segresmamba.tasks import get_task  # noqa: E402
from SegResMambaSlicerLib.headless import HeadlessSlicer, load_volume  # noqa: E402
from SegResMambaSlicerLib.logic import segment_volumes  # noqa: E402
from SegResMambaSlicerLib.panel import panel_state  # noqa: E402
from SegResMambaSlicerLib.process import imported_model_path, imported_task_name  # noqa: E402
from SegResMambaSlicerLib.segmentation import (  # noqa: E402
    labels_to_segmentation,
    segmentation_to_labels,
)
from SegResMambaSlicerLib.tasks import model_status, task_names  # noqa: E402

CASE = "BRATS13_003"


@pytest.fixture(scope="module")
def own_home(shared_data, tmp_path_factory):
    """A per-user folder where the real command imported the own-data checkpoint; the engine
    (in this process) reads it through SEGRESMAMBA_HOME, as Slicer's child processes do."""
    work = tmp_path_factory.mktemp("slicer-own")
    checkpoint = own_checkpoint(work / "best.safetensors", shared_data / "brats2013-2ch")
    env = {**os.environ, "SEGRESMAMBA_HOME": str(work / "home"), "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, "-m", "segresmamba", "models", "import", str(checkpoint)],
        env=env,
        capture_output=True,
        encoding="utf-8",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert imported_task_name(lines) == OWN_TASK  # what the widget selects after an import
    assert imported_model_path(lines) == str(work / "home" / "models" / f"{OWN_TASK}.safetensors")
    previous = os.environ.get("SEGRESMAMBA_HOME")
    os.environ["SEGRESMAMBA_HOME"] = str(work / "home")
    yield work / "home"
    if previous is None:
        del os.environ["SEGRESMAMBA_HOME"]
    else:
        os.environ["SEGRESMAMBA_HOME"] = previous


@pytest.fixture(scope="module")
def scans(shared_data):
    headless = HeadlessSlicer.create()
    folder = shared_data / "brats2013-2ch"
    nodes = [load_volume(headless, folder / "imagesTr" / f"{CASE}_{c:04d}.nii.gz") for c in (0, 1)]
    truth = sitk.ReadImage(str(folder / "labelsTr" / f"{CASE}.nii.gz"))  # float 0..4
    return headless, nodes, sitk.GetArrayFromImage(truth).astype(np.uint8)


def segments_of(node) -> list[tuple[str, tuple[float, ...], int, str]]:
    segmentation = node.GetSegmentation()
    out = []
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        terminology = (
            segment.GetTerminology()
            if hasattr(segment, "GetTerminology")
            else segment.GetTag("TerminologyEntry")
        )
        out.append((segment.GetName(), segment.GetColor(), segment.GetLabelValue(), terminology))
    return out


def test_the_module_lists_the_task_and_names_the_input_rows_after_its_channels(own_home):
    assert task_names()[-1] == OWN_TASK and "brats" in task_names()
    task = get_task(OWN_TASK)
    status = model_status(OWN_TASK)
    assert status.installed and status.path == own_home / "models" / f"{OWN_TASK}.safetensors"
    assert status.text == f"{OWN_TASK} (installed)"
    state = panel_state(task, [None, None], status, "cpu", {"cuda": None, "mps": None}, False)
    assert state.input_labels[:3] == ["FLAIR:", "T1Gd:", None]
    assert not state.apply_enabled and "FLAIR, T1Gd" in state.apply_tooltip


def test_the_manual_labels_become_named_coloured_segments_and_export_back(own_home, scans):
    headless, (flair, _), truth = scans
    task = get_task(OWN_TASK)
    node = labels_to_segmentation(headless.scene, truth, OWN_TASK, flair)
    expected = [
        (label.name, PALETTE[label.value], label.value, terminology_entry(label.terminology))
        for label in task.foreground_labels
    ]
    found = [(n, tuple(round(c, 6) for c in color), v, t) for n, color, v, t in segments_of(node)]
    assert found == [(n, tuple(round(c, 6) for c in color), v, t) for n, color, v, t in expected]
    assert [name for name, *_ in found] == [
        "necrosis",
        "edema",
        "non-enhancing tumour",
        "enhancing tumour",
    ]
    assert np.array_equal(segmentation_to_labels(headless.scene, node, OWN_TASK, flair), truth)


def test_the_logic_segments_with_the_imported_model_by_task_name(own_home, scans):
    headless, nodes, truth = scans
    node = segment_volumes(headless.scene, OWN_TASK, nodes, device="cpu", fast=True, overlap=0.0)
    names = [name for name, *_ in segments_of(node)]
    assert names == [label.name for label in get_task(OWN_TASK).foreground_labels]
    labels = segmentation_to_labels(headless.scene, node, OWN_TASK, nodes[0])
    assert labels.shape == truth.shape and set(np.unique(labels)) <= {0, 1, 2, 3, 4}

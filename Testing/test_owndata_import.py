"""A model trained on the user's own data, end to end through the real command: its checkpoint
(header carrying the whole task) -> ``segresmamba models import`` -> ``models list`` ->
``segresmamba segment -t NAME`` on a real case of the two-channel BraTS 2013 nnU-Net dataset,
with the label names of its ``dataset.json``; plus the refusals (a built-in task's name, a
checkpoint whose task is not registered). A second import is a new version: test_model_versions."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers_owndata import (
    OWN_TASK,
    PALETTE,
    digest,
    one_error_line,
    own_checkpoint,
    own_task_dict,
    run_cli,
)
from helpers_segment import assert_same_grid

from segresmamba.errors import EXIT_MODEL, EXIT_USAGE
from segresmamba.tasks import TASKS_JSON, builtin_tasks, get_task, list_tasks, task_names

CASE = "BRATS13_002"


@pytest.fixture(scope="module")
def dataset(shared_data) -> Path:
    return shared_data / "brats2013-2ch"


@pytest.fixture(scope="module")
def imported(dataset, tmp_path_factory):
    """A fresh per-user folder, the own-data checkpoint, and its import by the real command."""
    work = tmp_path_factory.mktemp("own")
    home = work / "home"
    checkpoint = own_checkpoint(work / "own-best.safetensors", dataset)
    bundled = digest(TASKS_JSON)
    result = run_cli("models", "import", checkpoint, home=home, cwd=work)
    assert result.returncode == 0, result.stderr
    assert digest(TASKS_JSON) == bundled, "the bundled tasks.json must never be edited"
    return work, home, checkpoint, result


def test_import_registers_the_task_from_the_checkpoint_header(imported, dataset):
    work, home, checkpoint, result = imported
    installed = home / "models" / f"{OWN_TASK}.safetensors"
    assert f"imported {checkpoint} as {installed}" in result.stdout
    assert f"task {OWN_TASK} is registered" in result.stdout
    assert digest(installed) == digest(checkpoint)
    registered = json.loads((home / "tasks.json").read_text(encoding="utf-8"))
    assert [task["name"] for task in registered["tasks"]] == [OWN_TASK]
    assert registered["tasks"][0] == own_task_dict(dataset)


def test_models_list_shows_the_imported_model_and_its_task(imported):
    work, home, _, _ = imported
    result = run_cli("models", "list", home=home, cwd=work)
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith(f"{OWN_TASK} "))
    assert f"task={OWN_TASK}" in line and "imported" in line
    assert "your own task" in result.stdout and "inputs FLAIR, T1Gd" in result.stdout


def test_engine_lookups_see_the_user_task_after_the_built_in_ones(imported, monkeypatch):
    _, home, _, _ = imported
    monkeypatch.setenv("SEGRESMAMBA_HOME", str(home))
    names = [task.name for task in list_tasks()]
    assert names[-1] == OWN_TASK and names.index(OWN_TASK) > names.index("brats")
    assert task_names() == names
    task = get_task(OWN_TASK)
    assert [spec.name for spec in task.inputs] == ["FLAIR", "T1Gd"]
    monkeypatch.setenv("SEGRESMAMBA_HOME", str(home.parent / "empty-home"))
    assert OWN_TASK not in task_names()


def test_segment_by_task_name_writes_the_labels_of_dataset_json_on_the_scan_grid(imported, dataset):
    work, home, _, _ = imported
    flair = dataset / "imagesTr" / f"{CASE}_0000.nii.gz"
    t1gd = dataset / "imagesTr" / f"{CASE}_0001.nii.gz"
    out = work / "case.seg.nrrd"
    result = run_cli(
        "segment", "-t", OWN_TASK, "-i", f"T1Gd={t1gd}", "-i", f"FLAIR={flair}", "-o", out,
        "--fast", "--overlap", "0", "--device", "cpu", "-q", home=home, cwd=work,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    labels = sitk.ReadImage(str(out))
    assert_same_grid(labels, sitk.ReadImage(str(flair)))
    names = json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))["labels"]
    foreground = sorted((v, k) for k, v in names.items() if v != 0)
    segments = []
    for index in range(len(foreground)):
        key = f"Segment{index}_"
        segments.append(
            (
                int(labels.GetMetaData(key + "LabelValue")),
                labels.GetMetaData(key + "Name"),
                tuple(float(c) for c in labels.GetMetaData(key + "Color").split()),
            )
        )
    assert [(v, n) for v, n, _ in segments] == foreground
    assert [c for _, _, c in segments] == [PALETTE[v] for v, _ in foreground]
    assert set(np.unique(sitk.GetArrayViewFromImage(labels))) <= {0, 1, 2, 3, 4}


def test_a_built_in_task_name_is_refused(dataset, tmp_path):
    home = tmp_path / "home"
    clash = own_checkpoint(tmp_path / "clash.safetensors", dataset, name="brats")
    result = run_cli("models", "import", clash, home=home, cwd=tmp_path)
    one_error_line(result, EXIT_MODEL, "clash.safetensors", "'brats'", "built-in task")
    assert not (home / "tasks.json").exists()
    assert not list((home / "models").glob("*.safetensors"))


def test_a_retrained_model_is_a_new_version_not_an_overwrite(imported, dataset, tmp_path):
    """Versions in full: test_model_versions.py. Here: the module's own import is version 1 and
    a retrained file neither needs --overwrite nor touches it (done in a copy of its home, so
    the other tests here still see one version)."""
    _, home, checkpoint, result = imported
    assert result.stdout.splitlines()[-1] == f"version 1 of task {OWN_TASK}"
    copy = tmp_path / "home"
    shutil.copytree(home, copy)
    installed = copy / "models" / f"{OWN_TASK}.safetensors"
    retrained = own_checkpoint(tmp_path / "retrained.safetensors", dataset, seed=1)
    result = run_cli("models", "import", retrained, home=copy, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == f"version 2 of task {OWN_TASK}"
    assert digest(installed) == digest(checkpoint)
    assert digest(copy / "models" / f"{OWN_TASK}@2.safetensors") == digest(retrained)
    named = run_cli("models", "import", retrained, "--name", "mine", home=copy, cwd=tmp_path)
    one_error_line(named, EXIT_MODEL, "'mine'", f"{OWN_TASK}@1", "without --name")


def test_a_checkpoint_whose_task_is_not_registered_says_to_import_it(
    dataset, shared_data, tmp_path
):
    home = tmp_path / "home"
    checkpoint = own_checkpoint(tmp_path / "own.safetensors", dataset)
    flair = dataset / "imagesTr" / f"{CASE}_0000.nii.gz"
    out = tmp_path / "out.nii.gz"
    result = run_cli("segment", "-t", OWN_TASK, "-i", flair, "-o", out, home=home, cwd=tmp_path)
    one_error_line(result, EXIT_USAGE, f"unknown task '{OWN_TASK}'", "segresmamba models import")
    result = run_cli(
        "segment", "-t", "phantom", "--model", checkpoint, "-o", out,
        "-i", shared_data / "ct-abdomen" / "example_ct_sm.nii.gz",
        home=home, cwd=tmp_path,
    )  # fmt: skip
    one_error_line(result, EXIT_MODEL, f"for task {OWN_TASK}", "segresmamba models import")
    assert not out.exists()


def test_a_hand_edited_user_registry_cannot_redefine_a_built_in_task(
    dataset, tmp_path, monkeypatch
):
    from segresmamba.errors import RegistryError

    item = own_task_dict(dataset, name="btcv")
    (tmp_path / "tasks.json").write_text(
        json.dumps({"format_version": 1, "tasks": [item]}), encoding="utf-8"
    )
    monkeypatch.setenv("SEGRESMAMBA_HOME", str(tmp_path))
    with pytest.raises(RegistryError, match=r"tasks\.json redefines built-in task\(s\) btcv"):
        list_tasks()


def test_task_names_need_neither_torch_nor_jsonschema(imported):
    """The Slicer module declares its task choices before the engine's packages are installed."""
    _, home, _, _ = imported
    code = (
        "import sys; sys.modules['torch'] = sys.modules['jsonschema'] = None\n"
        "from SegResMambaSlicerLib.tasks import task_names; print(','.join(task_names()))"
    )
    root = Path(__file__).resolve().parents[1] / "SegResMambaSlicer"
    env = {**os.environ, "SEGRESMAMBA_HOME": str(home), "PYTHONPATH": str(root)}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, encoding="utf-8", timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().split(",") == [t.name for t in builtin_tasks()] + [OWN_TASK]

"""Versions, not overwrites: each import of a model of the user's own task is kept as its next
version, through the real commands. Two checkpoints of one task whose second adds nothing but a
renamed label (as fine-tuning on a relabelled dataset would) -> ``models import`` twice ->
versions 1 and 2 side by side -> ``models list`` -> ``segment -t NAME@1``, ``-t NAME@2`` and
``-t NAME`` on a real BraTS 2013 case, each writing its own version's label names; plus the
refusals (a version that is not there, a built-in task's name) and the old single-file cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import SimpleITK as sitk
import torch
from helpers_owndata import (
    OWN_TASK,
    TINY_WIDTHS,
    digest,
    one_error_line,
    own_checkpoint,
    own_task_dict,
    run_cli,
)

from segresmamba.errors import EXIT_MODEL, EXIT_USAGE, ModelNotAvailableError, RegistryError
from segresmamba.network import SegResMamba
from segresmamba.tasks import task_from_dict
from segresmamba.weights import (
    import_model,
    make_header,
    model_versions,
    resolve_model,
    save_checkpoint,
    split_version,
    task_version,
)

CASE = "BRATS13_002"
RENAMED = "necrotic core"  # label 1 of version 2; version 1 calls it what dataset.json does


def trained_checkpoint(path: Path, dataset: Path, seed: int, provenance: dict, label1: str) -> Path:
    """A tiny checkpoint of the own task, its label 1 named ``label1``, with what training
    records in the header (cases, steps, Dice, date)."""
    item = own_task_dict(dataset)
    item["labels"][1]["name"] = label1
    task = task_from_dict(item, source="test task")
    torch.manual_seed(seed)
    model = SegResMamba(task.in_channels, task.out_channels, widths=TINY_WIDTHS)
    header = make_header(task, {"widths": list(TINY_WIDTHS)}, provenance)
    return save_checkpoint(path, model, header)


def segment_names(out: Path) -> list[str]:
    labels = sitk.ReadImage(str(out))
    keys = sorted(k for k in labels.GetMetaDataKeys() if k.endswith("_Name"))
    return [labels.GetMetaData(key) for key in keys]


@pytest.fixture(scope="module")
def dataset(shared_data) -> Path:
    return shared_data / "brats2013-2ch"


@pytest.fixture(scope="module")
def versions(dataset, tmp_path_factory):
    """A fresh per-user folder and two different checkpoints of one task, imported in turn."""
    work = tmp_path_factory.mktemp("versions")
    home = work / "home"
    necrosis = own_task_dict(dataset)["labels"][1]["name"]
    first = trained_checkpoint(
        work / "first.safetensors", dataset, 0,
        {"cases": 2, "steps": 10, "dice": 0.5, "date": "2026-01-02T03:04:05+00:00"}, necrosis,
    )  # fmt: skip
    second = trained_checkpoint(
        work / "second.safetensors", dataset, 1,
        {"steps": 300, "dice": 0.8125, "date": "2026-02-03T04:05:06+00:00",
         "split_cases": {"training": ["a", "b", "c"], "validation": ["d"]}}, RENAMED,
    )  # fmt: skip
    imports = [run_cli("models", "import", path, home=home, cwd=work) for path in (first, second)]
    return work, home, (first, second), imports, necrosis


def test_two_imports_give_versions_1_and_2_side_by_side(versions):
    work, home, (first, second), imports, _ = versions
    installed = [
        home / "models" / f"{OWN_TASK}.safetensors",
        home / "models" / f"{OWN_TASK}@2.safetensors",
    ]
    for number, (result, source, path) in enumerate(zip(imports, (first, second), installed), 1):
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0].startswith(f"task {OWN_TASK} is registered: ")
        assert lines[-2:] == [
            f"imported {source} as {path}",
            f"version {number} of task {OWN_TASK}",
        ]
        assert digest(path) == digest(source)
    registered = json.loads((home / "tasks.json").read_text(encoding="utf-8"))["tasks"]
    assert [task["labels"][1]["name"] for task in registered] == [RENAMED], "newest definition"


def test_models_list_shows_every_version_with_what_training_recorded(versions):
    work, home, _, _, _ = versions
    result = run_cli("models", "list", home=home, cwd=work)
    assert result.returncode == 0, result.stderr
    models = home / "models"
    assert (
        f"    {OWN_TASK}@1  cases=2 steps=10 dice=0.500 2026-01-02  {models / OWN_TASK}.safetensors\n"
        in result.stdout
    )
    assert (
        f"    {OWN_TASK}@2  cases=3 steps=300 dice=0.812 2026-02-03  {models / OWN_TASK}@2.safetensors"
        f"  (newest: -t {OWN_TASK} uses it)\n"
    ) in result.stdout
    assert f"{OWN_TASK}  task={OWN_TASK}  imported, 2 versions\n" in result.stdout
    mentions = [line for line in result.stdout.splitlines() if f"{OWN_TASK}@" in line]
    assert len(mentions) == 2, "each version once, not again as an imported file"


@pytest.mark.parametrize(
    ("task", "label1"),
    [("@1", "necrosis"), ("@2", RENAMED), ("", RENAMED)],
    ids=["v1", "v2", "newest"],
)
def test_segment_uses_the_version_asked_for_with_its_own_labels(versions, dataset, task, label1):
    work, home, _, _, necrosis = versions
    images = dataset / "imagesTr"
    out = work / f"case{task.replace('@', '-v')}.seg.nrrd"
    result = run_cli(
        "segment", "-t", OWN_TASK + task, "-o", out, "--fast", "--overlap", "0", "--device", "cpu",
        "-i", f"FLAIR={images / f'{CASE}_0000.nii.gz'}", "-i", f"T1Gd={images / f'{CASE}_0001.nii.gz'}",
        home=home, cwd=work,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    expected = label1 if label1 == RENAMED else necrosis
    assert segment_names(out)[0] == expected
    version = task[1:] or "2"
    assert f"note: version {version} of task {OWN_TASK}" in result.stderr


def test_a_version_that_is_not_there_is_refused_in_one_line(versions, dataset):
    work, home, _, _, _ = versions
    out = work / "none.nii.gz"
    flair = dataset / "imagesTr" / f"{CASE}_0000.nii.gz"
    result = run_cli(
        "segment", "-t", f"{OWN_TASK}@9", "-i", flair, "-i", flair, "-o", out, home=home, cwd=work
    )
    one_error_line(result, EXIT_MODEL, "no version 9", f"{OWN_TASK}@1, {OWN_TASK}@2")
    result = run_cli(
        "segment", "-t", f"{OWN_TASK}@two", "-i", flair, "-i", flair, "-o", out, home=home, cwd=work
    )
    one_error_line(result, EXIT_USAGE, "whole number")
    result = run_cli("segment", "-t", "brats@1", "-i", flair, "-o", out, home=home, cwd=work)
    one_error_line(result, EXIT_MODEL, "built in", "no versions")
    assert not out.exists()


def test_importing_the_same_file_again_returns_its_version(versions):
    work, home, (first, second), _, _ = versions
    before = sorted(p.name for p in (home / "models").iterdir())
    tasks = (home / "tasks.json").read_text(encoding="utf-8")
    for number, source in ((1, first), (2, second)):
        result = run_cli("models", "import", source, home=home, cwd=work)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[-1] == f"version {number} of task {OWN_TASK}"
    assert sorted(p.name for p in (home / "models").iterdir()) == before
    assert (home / "tasks.json").read_text(encoding="utf-8") == tasks, "still the newest's task"


def test_python_api_lists_versions_and_resolves_each(versions, monkeypatch):
    _, home, (first, second), _, _ = versions
    monkeypatch.setenv("SEGRESMAMBA_HOME", str(home))
    found = model_versions(OWN_TASK)
    assert [(v.version, v.cases, v.steps, v.dice) for v in found] == [
        (1, 2, 10, 0.5),
        (2, 3, 300, 0.8125),
    ]
    assert [digest(v.path) for v in found] == [digest(first), digest(second)]
    assert found[0].date == "2026-01-02T03:04:05+00:00"
    assert resolve_model(OWN_TASK) == found[1].path
    assert resolve_model(OWN_TASK, version=1) == resolve_model(f"{OWN_TASK}@1") == found[0].path
    assert resolve_model(OWN_TASK, f"{OWN_TASK}@1") == found[0].path
    task, version = task_version(OWN_TASK, 1)
    assert version == found[0] and task.labels[1].name != RENAMED
    with pytest.raises(
        ModelNotAvailableError, match=f"no version 3; its versions are {OWN_TASK}@1"
    ):
        resolve_model(OWN_TASK, version=3)
    assert split_version("mine@12") == ("mine", 12) and split_version("mine") == ("mine", None)


def test_an_old_style_single_model_counts_as_version_1(dataset, tmp_path, monkeypatch):
    """A cache from before versions: ``models/<task>.safetensors`` and the task registered."""
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    old = own_checkpoint(home / "models" / f"{OWN_TASK}.safetensors", dataset)
    registry = {"format_version": 1, "tasks": [own_task_dict(dataset)]}
    (home / "tasks.json").write_text(json.dumps(registry), encoding="utf-8")
    monkeypatch.setenv("SEGRESMAMBA_HOME", str(home))
    assert [(v.version, v.path, v.cases, v.dice) for v in model_versions(OWN_TASK)] == [
        (1, old, None, None)
    ]
    retrained = own_checkpoint(tmp_path / "retrained.safetensors", dataset, seed=1)
    assert import_model(retrained) == home / "models" / f"{OWN_TASK}@2.safetensors"
    assert [v.version for v in model_versions(OWN_TASK)] == [1, 2]
    assert digest(old) != digest(retrained)


def test_a_built_in_task_name_is_refused_and_nothing_written(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("SEGRESMAMBA_HOME", str(tmp_path / "home"))
    clash = own_checkpoint(tmp_path / "clash.safetensors", dataset, name="brats")
    with pytest.raises(RegistryError, match="'brats', which is the name of a built-in task"):
        import_model(clash)
    assert not (tmp_path / "home" / "tasks.json").exists()
    assert not list((tmp_path / "home").rglob("*.safetensors"))

"""Fine-tuning (``training.train --init-from``), ``--fold all`` and ``--progress-json``, on tiny
real datasets: BraTS 2013 cases at 6 mm, a network of widths 8-64, one or two steps.

The parent model is trained from an edited plan whose ``finetune`` section says one step at
learning rate 0, so a fine-tune that takes its length and rate from the plan must end with the
parent's weights exactly: that shows both that it starts from them and that it read the plan.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import SimpleITK as sitk
from helpers_owndata import coarse_cases, with_array, write_dataset

from segresmamba.datasets import load_dataset
from segresmamba.weights import import_model, read_header
from training.finetune import InitFromError, read_parent
from training.plan import FINETUNE_DEFAULTS, make_plan, read_plan, write_plan
from training.train import main as train

REPO = Path(__file__).resolve().parents[1]
CASES = ("BRATS13_001", "BRATS13_002", "BRATS13_003")
NEW_CASE = "BRATS13_004"
TINY = {"widths": [8, 16, 32, 64]}
PROGRESS_KEYS = [
    "event", "stage", "fraction", "elapsed_s", "step", "total_steps", "loss", "dice", "dice_on",
]  # fmt: skip


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env or {}), "PYTHONPATH": f"{REPO / 'SegResMambaSlicer'}:{REPO}"}
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, encoding="utf-8",
        timeout=300,
    )  # fmt: skip


def tensors(path: Path) -> dict:
    return safetensors.torch.load_file(str(path))


@pytest.fixture(scope="module")
def data(shared_data: Path, tmp_path_factory) -> dict[str, Path]:
    """A: three cases, BraTS labels; A4: A and one more case (the user's next correction);
    merged: A with one 'tumour' label; renamed: A whose second channel says T2."""
    brats = shared_data / "brats2013-2ch"
    cases = coarse_cases(brats, (*CASES, NEW_CASE))
    three = {k: v for k, v in cases.items() if k != NEW_CASE}
    root = tmp_path_factory.mktemp("data")
    merged = {
        k: (images, with_array(label, (sitk.GetArrayFromImage(label) > 0).astype(np.float32)))
        for k, (images, label) in three.items()
    }
    return {
        "A": write_dataset(root / "A", three, brats),
        "A4": write_dataset(root / "A4", cases, brats),
        "merged": write_dataset(
            root / "merged", merged, brats, labels={"background": 0, "tumour": 1}
        ),
        "renamed": write_dataset(
            root / "renamed", three, brats, channel_names={"0": "FLAIR", "1": "T2"}
        ),
    }


@pytest.fixture(scope="module")
def plan_file(data: dict[str, Path], tmp_path_factory) -> Path:
    """A's plan, edited as a user would: tiny network, two steps, and a fine-tune of one step
    at learning rate 0."""
    plan = make_plan(load_dataset(data["A"]), spacing_mm=6.0)
    plan["task"]["network"] = dict(TINY)
    plan["training"].update(steps=2, val_every=2, batch_size=1)
    plan["finetune"] = {"steps": 1, "learning_rate": 0.0, "val_every": 1}
    return write_plan(plan, tmp_path_factory.mktemp("plan") / "plan.json")


@pytest.fixture(scope="module")
def parent(data, plan_file, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The parent, trained as the Slicer module runs it: a real process, every case, JSON."""
    out = tmp_path_factory.mktemp("parent") / "run"
    result = run(
        "training.train", "--dataset", str(data["A"]), "--plan", str(plan_file), "--out", str(out),
        "--fold", "all", "--progress-json", "--threads", "2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


@pytest.fixture(scope="module")
def peer(data, plan_file, tmp_path_factory) -> Path:
    """A SegResNet parent from the same plan (one step)."""
    out = tmp_path_factory.mktemp("peer") / "run"
    code = train(
        ["--dataset", str(data["A"]), "--plan", str(plan_file), "--out", str(out), "--model",
         "segresnet", "--max-steps", "1", "--threads", "2"]
    )  # fmt: skip
    assert code == 0
    return out


def test_progress_json_is_one_line_per_step(parent) -> None:
    out, result = parent
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [line["step"] for line in lines] == [1, 2]
    for line in lines:
        assert list(line) == PROGRESS_KEYS
        assert line["event"] == "progress" and line["stage"] == "training"
        assert line["total_steps"] == 2 and line["fraction"] == line["step"] / 2
        assert line["elapsed_s"] > 0 and np.isfinite(line["loss"])
        assert line["dice_on"] == "training cases"  # --fold all
    assert lines[0]["dice"] is None  # no validation yet
    log = (out / "log.csv").read_text(encoding="utf-8").splitlines()
    val_mean = float(log[-1].split(",")[log[0].split(",").index("val_mean")])
    assert lines[1]["dice"] == pytest.approx(val_mean)
    assert lines[1]["loss"] == pytest.approx(float(log[-1].split(",")[2]))
    assert "step/s" not in result.stderr and "\r" not in result.stdout + result.stderr  # no bar
    assert result.stdout.strip().splitlines()[-1].startswith("done: ")


def test_fold_all_trains_and_validates_on_every_case(parent) -> None:
    out, result = parent
    assert "validation runs on the training cases" in result.stdout
    info = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert info["training_case_ids"] == info["validation_case_ids"] == list(CASES)
    assert info["settings"]["fold"] == "all"
    provenance = read_header(out / "best.safetensors")["provenance"]
    assert provenance["cases"] == 3 and provenance["trained_cases"] == list(CASES)
    assert provenance["split_cases"]["training"] == list(CASES)


def test_the_checkpoint_carries_the_plan_it_was_trained_with(parent, plan_file) -> None:
    out, _ = parent
    header = read_header(out / "best.safetensors")
    assert header["plan"] == read_plan(out / "plan.json")
    assert header["plan"]["finetune"] == read_plan(plan_file)["finetune"]
    assert header["plan"]["task"] == header["task_definition"]
    assert "init_from" not in header["provenance"]


def test_finetune_starts_from_the_model_and_takes_the_plans_finetune_section(
    parent, data, tmp_path: Path, capsys
) -> None:
    model = parent[0] / "best.safetensors"
    out = tmp_path / "child"
    assert train(["--dataset", str(data["A4"]), "--init-from", str(model), "--out", str(out)]) == 0
    assert "labels differ" not in capsys.readouterr().out
    settings = json.loads((out / "run.json").read_text(encoding="utf-8"))["settings"]
    assert settings["total_steps"] == 1 and settings["lr"] == 0.0  # the plan's finetune section
    child, before = tensors(out / "best.safetensors"), tensors(model)
    assert child.keys() == before.keys()
    assert all(np.array_equal(child[k].numpy(), before[k].numpy()) for k in child)  # lr 0
    plan = read_plan(out / "plan.json")
    assert sorted(plan["folds"]["case_fold"]) == [*CASES, NEW_CASE]  # dealt again, 4 cases
    assert plan["dataset"]["folder"] == str(data["A4"].resolve())
    header = read_header(out / "best.safetensors")
    assert header["task_definition"] == read_header(model)["task_definition"]
    provenance = header["provenance"]
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    assert provenance["init_from"] == {"model": str(model), "path": str(model), "sha256": digest}
    trained = set(CASES) | set(provenance["split_cases"]["training"])
    assert provenance["cases"] == len(trained) == 4  # the parent's three and the new one


def test_fold_all_keeps_the_newest_weights_not_the_best_training_dice(
    parent, data, tmp_path: Path, capsys
) -> None:
    """Under --fold all the Dice is measured on the training cases, so the highest one picks the
    most overfitted weights: best.safetensors holds the newest validated ones. At learning rate
    0 every validation gives the same Dice, so only this rule picks the last one."""
    out = tmp_path / "child"
    argv = ["--dataset", str(data["A4"]), "--init-from", str(parent[0] / "best.safetensors")]
    argv += ["--out", str(out), "--fold", "all", "--max-steps", "3", "--val-every", "1"]
    assert train(argv) == 0
    said = capsys.readouterr().out
    assert "best.safetensors holds the newest validated weights" in said
    assert "newest validation mean Dice" in said.strip().splitlines()[-1]
    assert read_header(out / "best.safetensors")["provenance"]["steps"] == 3


def test_other_labels_start_only_the_output_layer_afresh(parent, data, tmp_path, capsys) -> None:
    model = parent[0] / "best.safetensors"
    out = tmp_path / "child"
    code = train(["--dataset", str(data["merged"]), "--init-from", str(model), "--out", str(out)])
    assert code == 0
    said = [line for line in capsys.readouterr().out.splitlines() if "labels differ" in line]
    assert len(said) == 1 and "output layer is re-initialised" in said[0]
    _same_but_the_output_layer(tensors(model), tensors(out / "best.safetensors"), "head.")
    header = read_header(out / "best.safetensors")
    assert [label["name"] for label in header["labels"]] == ["background", "tumour"]
    assert header["network"]["widths"] == TINY["widths"]  # the model's network, not a new plan


def _same_but_the_output_layer(before: dict, after: dict, prefix: str) -> None:
    assert before.keys() == after.keys()
    output = [k for k in before if k.startswith(prefix)]
    assert output and all(before[k].shape != after[k].shape for k in output)
    for key in before.keys() - set(output):
        assert np.array_equal(before[key].numpy(), after[key].numpy()), key


def test_segresnet_fine_tunes_the_same_way(peer, data, tmp_path, capsys) -> None:
    model = peer / "best.safetensors"
    out = tmp_path / "child"
    argv = ["--dataset", str(data["merged"]), "--init-from", str(model), "--out", str(out)]
    assert train([*argv, "--model", "segresnet"]) == 0
    assert "labels differ" in capsys.readouterr().out
    _same_but_the_output_layer(tensors(model), tensors(out / "best.safetensors"), "conv_final.2.")
    with safetensors.safe_open(str(out / "best.safetensors"), "pt") as file:
        provenance = json.loads(file.metadata()["provenance"])
    assert provenance["init_from"]["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert train([*argv[:-1], str(tmp_path / "other")]) == 2  # a SegResNet needs --model segresnet
    assert "--model segresnet" in capsys.readouterr().err


def test_other_channels_are_refused_in_one_line_before_anything_runs(
    parent, data, tmp_path
) -> None:
    out = tmp_path / "child"
    model = parent[0] / "best.safetensors"
    result = run("training.train", "--dataset", str(data["renamed"]), "--init-from", str(model),
                 "--out", str(out))  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "(FLAIR, T2)" in lines[0] and "(FLAIR, T1Gd)" in lines[0]
    assert not out.exists() and "Traceback" not in result.stderr


def test_a_plan_with_init_from_is_refused(parent, data, plan_file, tmp_path) -> None:
    argv = ["--dataset", str(data["A"]), "--out", str(tmp_path / "x")]
    with pytest.raises(SystemExit) as exit_info:
        train([*argv, "--init-from", str(parent[0] / "best.safetensors"), "--plan", str(plan_file)])
    assert exit_info.value.code == 2
    assert train([*argv, "--init-from", str(tmp_path / "missing.safetensors")]) == 2
    assert not (tmp_path / "x").exists()


def test_init_from_an_imported_task_name(parent, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SEGRESMAMBA_HOME", str(tmp_path / "home"))
    imported = import_model(parent[0] / "best.safetensors")
    name = read_header(imported)["task"]
    for given in (name, f"{name}@1"):
        found = read_parent(given, "segresmamba")
        assert found.path == imported and found.plan == read_header(imported)["plan"]
    with pytest.raises(InitFromError, match="@2"):
        read_parent(f"{name}@2", "segresmamba")


def test_plans_without_a_finetune_section_get_the_defaults(data) -> None:
    from training.finetune import finetune_section

    assert FINETUNE_DEFAULTS["cpu"] == {"steps": 300, "learning_rate": 1e-3, "val_every": 50}
    assert finetune_section({}, "cpu") == FINETUNE_DEFAULTS["cpu"]
    assert finetune_section({"finetune": {"steps": 20}}, "cpu")["learning_rate"] == 1e-3
    plan = make_plan(load_dataset(data["A"]), spacing_mm=6.0, device="cuda")
    assert plan["finetune"] == FINETUNE_DEFAULTS["cuda"]


def test_a_run_log_without_tensorboard_says_so_once(tmp_path: Path, monkeypatch, capsys) -> None:
    """Slicer's Python has no TensorBoard: the run keeps its CSV log and says why once."""
    from training.runlog import RunLog

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    log = RunLog(tmp_path, ["step", "loss"], enabled=True)
    for step in (1, 2):
        log.scalars(step, {"train/loss": 0.5})
        log.row({"step": step, "loss": 0.5})
    log.close()
    assert (tmp_path / "log.csv").read_text(encoding="utf-8").splitlines() == [
        "step,loss",
        "1,0.5",
        "2,0.5",
    ]
    assert capsys.readouterr().err.count("TensorBoard") == 1
    assert not (tmp_path / "tensorboard").exists()

"""training.train on generated phantoms: the loss falls, a resumed run continues exactly, the
best checkpoint is an engine checkpoint with provenance, and training sees what segment() sees."""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.transforms import Compose, ConvertToMultiChannelBasedOnBratsClassesd

from segresmamba.inference import prepare
from segresmamba.io import read_image, write_image
from segresmamba.phantom import make_phantom
from segresmamba.tasks import get_task
from segresmamba.weights import load_checkpoint
from training.train import main as train
from training.transforms import deterministic_transforms

TINY = [
    "--task", "phantom", "--max-steps", "4", "--val-every", "4", "--phantom-train", "2",
    "--phantom-val", "1", "--phantom-size", "64x64x40", "--network", '{"second_tom": false}',
    "--seed", "3", "--threads", "1",
]  # fmt: skip


def _losses(run: Path) -> dict[int, str]:
    with open(run / "log.csv", newline="", encoding="utf-8") as file:
        return {int(row["step"]): row["loss"] for row in csv.DictReader(file)}


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory) -> Path:
    """Four uninterrupted steps (validation at step 4)."""
    out = tmp_path_factory.mktemp("straight")
    assert train([*TINY, "--out", str(out)]) == 0
    return out


def test_loss_falls_and_best_checkpoint_has_provenance(straight_run: Path) -> None:
    losses = [float(v) for v in _losses(straight_run).values()]
    assert len(losses) == 4 and losses[-1] < losses[0], losses
    model, header = load_checkpoint(straight_run / "best.safetensors", task="phantom")
    provenance = header["provenance"]
    assert provenance["steps"] == 4 and 0.0 <= provenance["dice"] <= 1.0
    assert "phantom seeds" in provenance["split"] and provenance["command"].startswith(
        "python -m training.train --task phantom"
    )
    for field in ("dataset", "commit", "date", "dice_per_class", "training_hours"):
        assert provenance[field] not in (None, ""), field
    assert header["network"]["second_tom"] is False and model.widths == (8, 16, 32, 64)
    run = json.loads((straight_run / "run.json").read_text(encoding="utf-8"))
    assert run["finished"]["step"] == 4 and len(run["finished"]["replica_weight_digests"]) == 1
    assert list((straight_run / "tensorboard").glob("events.out.tfevents.*"))


def test_resume_continues_exactly(straight_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "interrupted"
    assert train([*TINY, "--out", str(out), "--stop-after", "2"]) == 0
    assert list(_losses(out)) == [1, 2]
    state = (out / "resume.safetensors").read_bytes()
    length = struct.unpack("<Q", state[:8])[0]
    assert json.loads(state[8 : 8 + length])["__metadata__"]  # safetensors, not a pickle
    assert train([*TINY, "--out", str(out), "--resume"]) == 0
    assert _losses(out) == _losses(straight_run)  # full-precision repr: bit-for-bit equal


def test_resume_refuses_other_settings(straight_run: Path, capsys) -> None:
    assert train([*TINY, "--out", str(straight_run), "--resume", "--lr", "0.01"]) == 2  # bad input
    assert "different settings (lr)" in capsys.readouterr().err
    assert train([*TINY, "--out", str(straight_run)]) == 2  # no silent overwrite of a run


def test_task_without_data_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        train(["--task", "btcv", "--out", str(tmp_path)])
    assert exit_info.value.code == 2


def test_validation_preprocessing_is_segments(tmp_path: Path) -> None:
    """The validation transforms give the very tensor segment()'s prepare() gives."""
    task = get_task("phantom")
    ct, truth = make_phantom(5, size=(64, 64, 40))
    image = write_image(ct, tmp_path / "ct.nii.gz")
    label = write_image(truth, tmp_path / "label.nii.gz")
    ours = Compose(deterministic_transforms(task, crop_foreground=False))(
        {"image": str(image), "label": str(label)}
    )
    theirs = prepare([read_image(image)], task)
    assert torch.equal(ours["image"].as_tensor(), theirs.as_tensor())
    assert torch.allclose(ours["image"].affine, theirs.affine)
    assert set(ours["label"].unique().tolist()) == {0, 1, 2, 3, 4, 5}


def test_brats_regions_match_the_task_rules() -> None:
    task = get_task("brats")
    labels = np.random.default_rng(0).choice([0, 1, 2, 4], size=(1, 8, 8, 8))
    monai_regions = ConvertToMultiChannelBasedOnBratsClassesd(keys="label")({"label": labels})
    ours = task.labelmap.to_regions(labels[0], "2021")
    assert np.array_equal(np.asarray(monai_regions["label"]), ours)
    assert [label.abbreviation for label in task.labels] == ["TC", "WT", "ET"]

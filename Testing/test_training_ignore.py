"""nnU-Net's ``ignore`` label in training: voxels nobody labelled teach nothing.

Changing the prediction under ignored voxels must change neither the loss nor its gradient
(which is zero there), nor the validation Dice; the plan leaves them out of the class shares and
out of the task; they survive resampling; patches are never centred on them; and a real run on a
partly labelled dataset (real BraTS 2013 cases at 6 mm, most slices ignored) trains.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from helpers_owndata import GENERIC, coarse_cases, partly_labelled, write_dataset
from monai.losses import DiceCELoss, DiceLoss

from segresmamba.datasets import load_dataset
from segresmamba.tasks import task_from_dict
from segresmamba.weights import read_header
from training.losses import SegmentationLoss
from training.plan import make_plan, read_plan
from training.train import main as train
from training.transforms import LabelledIndicesd, deterministic_transforms
from training.validation import case_dice

IGNORE = 5  # one above BraTS 2013's highest label (4), as nnU-Net v2 wants it
LABELS = {
    "background": 0,
    "necrosis": 1,
    "edema": 2,
    "non-enhancing tumour": 3,
    "enhancing tumour": 4,
    "ignore": IGNORE,
}
KEEP = {"BRATS13_001": range(10, 13), "BRATS13_002": range(15, 18), "BRATS13_003": range(15, 18)}
"""The axial slices (of 26 at 6 mm) each case keeps labelled: a few through its tumour."""


def _batch(output: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits, label batch, ignored mask (B, 1, ...)): half the slices ignored."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 4, 6, 6, 8, generator=generator)
    ignored = torch.zeros(2, 1, 6, 6, 8, dtype=torch.bool)
    ignored[..., 4:] = True
    if output == "softmax":
        label = torch.randint(0, 4, (2, 1, 6, 6, 8), generator=generator).float()
    else:  # four region channels, the ignore value in every one of them (LoadCased)
        label = (torch.rand(2, 4, 6, 6, 8, generator=generator) > 0.5).float()
    label = torch.where(ignored, float(IGNORE), label)
    return logits, label, ignored


def _loss_and_grad(loss_fn, logits: torch.Tensor, label: torch.Tensor):
    logits = logits.clone().requires_grad_(True)
    loss = loss_fn(logits, label)
    loss.backward()
    return loss.detach(), logits.grad


@pytest.mark.parametrize("output", ["softmax", "sigmoid"])
@pytest.mark.parametrize("name", ["dice", "dicece"])
def test_ignored_voxels_change_neither_loss_nor_gradient(output: str, name: str) -> None:
    loss_fn = SegmentationLoss(output, name, ignore_value=IGNORE)
    logits, label, ignored = _batch(output)
    loss, grad = _loss_and_grad(loss_fn, logits, label)
    assert torch.isfinite(loss) and loss > 0
    assert torch.all(grad[ignored.expand_as(grad)] == 0)  # nothing is learnt there
    assert grad[~ignored.expand_as(grad)].abs().sum() > 0
    noise = 20 * torch.randn(logits.shape, generator=torch.Generator().manual_seed(1))
    changed = torch.where(ignored, logits + noise, logits)  # another prediction, ignored only
    loss_changed, grad_changed = _loss_and_grad(loss_fn, changed, label)
    assert torch.equal(loss, loss_changed)
    assert torch.equal(grad, grad_changed)  # everywhere, not only under the ignored voxels
    elsewhere = torch.where(ignored, logits, logits + noise)  # the control: labelled voxels
    assert not torch.equal(loss, _loss_and_grad(loss_fn, elsewhere, label)[0])


@pytest.mark.parametrize("name", ["dice", "dicece"])
def test_without_ignored_voxels_the_loss_is_monais(name: str) -> None:
    logits, label, _ = _batch("softmax")
    label = label.clamp(max=3)  # every voxel labelled
    peer = (DiceCELoss if name == "dicece" else DiceLoss)(to_onehot_y=True, softmax=True)
    for ignore in (None, IGNORE):
        ours = SegmentationLoss("softmax", name, ignore_value=ignore)(logits, label)
        assert torch.allclose(ours, peer(logits, label), atol=1e-6)
    regions = (label > 1).float().expand(-1, 4, -1, -1, -1)
    dice = DiceLoss(sigmoid=True, smooth_nr=0.0, smooth_dr=1e-5, squared_pred=True)
    ours = SegmentationLoss("sigmoid", "dice", ignore_value=IGNORE)(logits, regions)
    assert torch.allclose(ours, dice(logits, regions), atol=1e-6)


def _dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    return 2 * float((prediction & truth).sum()) / float(prediction.sum() + truth.sum())


def test_validation_dice_leaves_ignored_voxels_out() -> None:
    task = task_from_dict(_plan_task(LABELS))
    logits, label, ignored = _batch("softmax")
    probabilities, label, ignored = logits[0].softmax(0), label[0], ignored[0, 0]
    scores = case_dice(probabilities, label, task, ignore_value=IGNORE)
    prediction, truth = probabilities.argmax(0).numpy(), label[0].numpy()
    labelled = ~ignored.numpy()
    for value, score in zip(range(1, 4), scores):  # class 4 is absent: NaN
        expected = _dice((prediction == value) & labelled, (truth == value) & labelled)
        assert score == pytest.approx(expected, abs=1e-6)
    other = torch.where(ignored, torch.roll(probabilities, 1, 0), probabilities)
    assert np.allclose(case_dice(other, label, task, IGNORE), scores, equal_nan=True)
    assert not np.allclose(case_dice(torch.roll(probabilities, 1, 0), label, task, IGNORE), scores)

    regions = _batch("sigmoid")[1][0]  # ignored voxels hold IGNORE in every region channel
    sigmoid = task_from_dict(_region_task())
    probabilities = torch.rand(regions.shape, generator=torch.Generator().manual_seed(2))
    scores = case_dice(probabilities, regions, sigmoid, ignore_value=IGNORE)
    for channel, score in enumerate(scores):
        expected = _dice(
            (probabilities[channel].numpy() > 0.5) & labelled,
            (regions[channel].numpy() == 1) & labelled,
        )
        assert score == pytest.approx(expected, abs=1e-6)
    other = torch.where(ignored, 1 - probabilities, probabilities)
    assert np.allclose(case_dice(other, regions, sigmoid, IGNORE), scores)


def _plan_task(labels: dict[str, int]) -> dict:
    """A small softmax (or, with a labelmap, sigmoid) task with these labels."""
    shown = [
        {"value": v, "name": n, "color": [0.5, 0.5, 0.5], "terminology": GENERIC}
        for n, v in labels.items()
        if n != "ignore"
    ]
    return {
        "name": "partial",
        "title": "partly labelled",
        "description": "test",
        "dataset": "partial",
        "modality": "MR",
        "inputs": [{"name": "FLAIR", "description": "FLAIR", "name_patterns": []}],
        "output": "softmax",
        "labels": shown,
        "spacing_mm": [6.0, 6.0, 6.0],
        "fast_spacing_mm": [12.0, 12.0, 12.0],
        "patch_size": [64, 64, 64],
        "intensity": {"kind": "zscore_nonzero"},
        "network": {"widths": [8, 16, 32, 64]},
    }


def _region_task() -> dict:
    """A sigmoid task of four regions A-D, region X holding label value X (1-4)."""
    regions = "ABCD"
    return _plan_task({}) | {
        "output": "sigmoid",
        "labels": [
            {
                "value": i + 1,
                "name": r,
                "abbreviation": r,
                "color": [0.5, 0.5, 0.5],
                "terminology": GENERIC,
            }
            for i, r in enumerate(regions)
        ],
        "labelmap": {
            "labels": [
                {
                    "value": v,
                    "value_2021": v,
                    "name": f"l{v}",
                    "abbreviation": f"L{v}",
                    "color": [0.5, 0.5, 0.5],
                    "terminology": GENERIC,
                }
                for v in (1, 2, 3, 4)
            ],
            "regions": {r: [i + 1] for i, r in enumerate(regions)},
            "paint_order": [{"region": r, "value": i + 1} for i, r in enumerate(regions)],
        },
    }


@pytest.fixture(scope="module")
def brats(shared_data: Path) -> Path:
    folder = shared_data / "brats2013-2ch"
    assert (folder / "dataset.json").is_file(), f"missing {folder}"
    return folder


@pytest.fixture(scope="module")
def partial(brats: Path, tmp_path_factory) -> Path:
    """Three real cases at 6 mm, each labelled on three axial slices only, the rest ignored."""
    cases = {
        case: (images, partly_labelled(label, KEEP[case], IGNORE))
        for case, (images, label) in coarse_cases(brats).items()
    }
    return write_dataset(tmp_path_factory.mktemp("partial") / "data", cases, brats, labels=LABELS)


def test_the_plan_knows_the_ignore_label(partial: Path) -> None:
    dataset = load_dataset(partial)
    assert dataset.ignore_value == IGNORE
    plan = make_plan(dataset, spacing_mm=6.0)
    assert plan["dataset"]["ignore_value"] == IGNORE
    assert [label["name"] for label in plan["task"]["labels"]] == list(LABELS)[:-1]
    shares = plan["fingerprint"]["class_voxel_share"]
    assert str(IGNORE) not in shares and sum(shares.values()) == pytest.approx(1.0)
    labels = [sitk.GetArrayFromImage(sitk.ReadImage(str(c.label))) for c in dataset.cases]
    ignored = sum(int((a == IGNORE).sum()) for a in labels) / sum(a.size for a in labels)
    assert plan["fingerprint"]["ignored_voxel_share"] == pytest.approx(ignored)
    assert ignored > 0.8
    background = sum(int((a == 0).sum()) for a in labels)
    assert shares["0"] == pytest.approx(background / sum(int((a != IGNORE).sum()) for a in labels))


def test_region_based_plan_has_no_ignore_region(partial: Path, tmp_path: Path) -> None:
    meta = json.loads((partial / "dataset.json").read_text(encoding="utf-8"))
    meta["labels"] = {
        "background": 0,
        "whole tumour": [1, 2, 3, 4],
        "tumour core": [1, 3, 4],
        "necrosis": [1],
        "enhancing tumour": [4],
        "ignore": IGNORE,
    }
    meta["regions_class_order"] = [2, 3, 1, 4]
    (tmp_path / "regions").mkdir()
    for sub in ("imagesTr", "labelsTr"):
        (tmp_path / "regions" / sub).symlink_to(partial / sub)
    (tmp_path / "regions" / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
    dataset = load_dataset(tmp_path / "regions")
    plan = make_plan(dataset, spacing_mm=6.0)
    task = task_from_dict(plan["task"])
    assert IGNORE not in task.labelmap.values()
    item = dataset.cases[0].as_entry()
    for transform in deterministic_transforms(task, False, True, IGNORE):
        item = transform(item)
    label = torch.as_tensor(item["label"])
    ignored = label[0] == IGNORE
    assert ignored.any() and torch.all(label[:, ignored] == IGNORE)  # every region channel
    assert set(torch.unique(label[:, ~ignored]).tolist()) == {0.0, 1.0}


def test_resampling_keeps_the_ignore_value(partial: Path) -> None:
    dataset = load_dataset(partial)
    task = task_from_dict(_plan_task(LABELS) | {"spacing_mm": [4.0, 4.0, 4.0]})
    item = dataset.cases[0].as_entry()
    for transform in deterministic_transforms(task, False, True, IGNORE):
        item = transform(item)
    label = torch.as_tensor(item["label"])
    original = sitk.GetArrayFromImage(sitk.ReadImage(str(dataset.cases[0].label)))
    assert set(torch.unique(label).tolist()) <= set(range(IGNORE + 1))  # no blend of values
    assert float((label == IGNORE).float().mean()) == pytest.approx(
        float((original == IGNORE).mean()), abs=0.05
    )
    indices = LabelledIndicesd(IGNORE)({"image": item["image"], "label": item["label"]})
    flat = label[0].flatten()
    assert len(indices["label_fg_indices"]) and len(indices["label_bg_indices"])
    assert torch.all(flat[indices["label_fg_indices"]] > 0)
    assert torch.all(flat[indices["label_fg_indices"]] != IGNORE)
    assert torch.all(flat[indices["label_bg_indices"]] == 0)


def test_a_partly_labelled_dataset_trains(partial: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code = train(
        [
            "--dataset", str(partial), "--out", str(out), "--max-steps", "2", "--val-every", "2",
            "--batch-size", "1", "--network", '{"widths": [8, 16, 32, 64]}', "--threads", "2",
        ]
    )  # fmt: skip
    assert code == 0
    assert read_plan(out / "plan.json")["dataset"]["ignore_value"] == IGNORE
    header = read_header(out / "best.safetensors")
    assert "ignore" not in [label["name"] for label in header["labels"]]
    rows = (out / "log.csv").read_text(encoding="utf-8").strip().splitlines()[1:]
    assert len(rows) == 2 and all(np.isfinite(float(r.split(",")[2])) for r in rows)
    assert 0 <= header["provenance"]["dice"] <= 1

"""A task gives a new dataset its labels: segments match the task's labels by name or by
terminology code (``segresmamba dataset add --task``, real subprocesses), and the overlapping
regions of a sigmoid task (BraTS) become nnU-Net's region-based layout. Synthetic 24-32^3
images, so each test takes a second or two."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from helpers_owndata import dataset_add, snapshot

from segresmamba.datasets import add_case, check_cases, load_dataset, read_label_source
from segresmamba.io.seg_nrrd import Segment, terminology_entry, write_segmentation
from segresmamba.tasks import Terminology, get_task


def voxels(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_a_task_gives_a_new_dataset_its_labels_and_segments_match_by_code(tmp_path):
    """btcv: the dataset (named btcv-own) takes the task's 14 labels with their colours and
    codes; a segment matches by name (any case, spaces trimmed) or, failing that, by its
    category + type + modifier codes; a code without the label's modifier matches nothing."""
    rng = np.random.default_rng(1)
    scan = sitk.GetImageFromArray(rng.integers(-1000, 1000, (32, 32, 32)).astype(np.int16))
    scan.SetSpacing((1.5, 1.5, 2.0))
    sitk.WriteImage(scan, str(tmp_path / "scan.nii.gz"))
    btcv = get_task("btcv")
    spleen, left = btcv.label("spleen"), btcv.label("left kidney")
    kidney = Terminology(left.terminology.category, left.terminology.type)  # no laterality
    array = np.zeros((32, 32, 32), np.uint8)
    array[2:9, 3:10, 4:12], array[12:20, 5:9, 5:9], array[22:30, 20:30, 20:30] = 1, 2, 3
    labels = sitk.GetImageFromArray(array)
    labels.CopyInformation(scan)
    named = [("  Spleen ", spleen.terminology), ("Niere links", left.terminology)]
    write_segmentation(
        labels, tmp_path / "ok.seg.nrrd",
        [Segment(n, v + 1, (1.0, 0.0, 0.0), terminology_entry(t)) for v, (n, t) in enumerate(named)],
    )  # fmt: skip
    folder = tmp_path / "ct"
    result = dataset_add(
        folder, "--case", "ct1", "-i", tmp_path / "scan.nii.gz", "--labels", tmp_path / "ok.seg.nrrd",
        "--task", "btcv", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    info = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    assert info["name"] == "btcv-own" and info["channel_names"] == {"0": "CT"}
    assert info["labels"] == {label.name: label.value for label in btcv.labels}
    assert info["terminology"]["left kidney"] == left.terminology.to_dict()
    assert info["colors"]["spleen"] == [round(c, 4) for c in spleen.color]
    written = voxels(folder / "labelsTr" / "ct1.nii.gz")
    expected = np.where(array == 1, spleen.value, np.where(array == 2, left.value, 0))
    assert np.array_equal(written, expected)
    write_segmentation(
        labels, tmp_path / "no_side.seg.nrrd",
        [Segment("Niere", 1, (1.0, 0.0, 0.0), terminology_entry(kidney))],
    )  # fmt: skip
    before = snapshot(folder)
    refused = dataset_add(
        folder, "--case", "ct2", "-i", tmp_path / "scan.nii.gz", "--labels",
        tmp_path / "no_side.seg.nrrd", "--task", "btcv", cwd=tmp_path,
    )  # fmt: skip
    assert refused.returncode == 2 and "segment 'Niere' is not a label" in refused.stderr
    assert snapshot(folder) == before


def test_overlapping_regions_of_a_sigmoid_task_make_a_region_based_dataset(tmp_path):
    """BraTS: overlapping segments (whole tumour, tumour core, enhancing tumour, each its own
    layer) become nnU-Net's region-based layout; the labelmap is painted as nnU-Net paints
    regions, which gives the BraTS labelmap back."""
    brats = get_task("brats")
    shape = (24, 24, 24)
    whole = np.zeros(shape, bool)
    whole[4:20, 4:20, 4:20] = True
    core = np.zeros(shape, bool)
    core[8:16, 8:16, 8:16] = True
    enhancing = np.zeros(shape, bool)
    enhancing[10:13, 8:16, 8:16] = True
    masks = {"whole tumour": whole, "tumour core": core, "enhancing tumour": enhancing}
    layers = sitk.GetImageFromArray(
        np.stack(list(masks.values()), -1).astype(np.uint8), isVector=True
    )
    entries = {label.name: label for label in brats.labels}
    write_segmentation(
        layers, tmp_path / "regions.seg.nrrd",
        [Segment(n, 1, entries[n].color, terminology_entry(entries[n].terminology), i)
         for i, n in enumerate(masks)],
    )  # fmt: skip
    rng = np.random.default_rng(2)
    images = {}
    for spec in brats.inputs:
        image = sitk.GetImageFromArray(rng.random(shape).astype(np.float32))
        images[spec.name] = image
    folder = tmp_path / "brats"
    added = add_case(
        folder, "b1", images, read_label_source(tmp_path / "regions.seg.nrrd"), task=brats
    )
    add_case(folder, "b2", images, tmp_path / "regions.seg.nrrd", task=brats)
    assert added.cases == 1 and set(added.label_names) == set(masks)
    dataset = load_dataset(folder)
    check_cases(dataset)
    assert dataset.region_based and dataset.name == "brats-own"
    expected = brats.labelmap.from_regions(
        np.stack([masks[label.name] for label in brats.labels]), "2023"
    )
    assert np.array_equal(voxels(folder / "labelsTr" / "b1.nii.gz"), expected)

"""The task registry: tasks.json against its schema, the labels and codes each task promises."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from segresmamba.errors import RegistryError, SegResMambaError, UnknownTaskError
from segresmamba.network import SegResMamba
from segresmamba.tasks import (
    TASKS_JSON,
    TASKS_SCHEMA_JSON,
    get_task,
    list_tasks,
    load_tasks,
    task_from_dict,
)

REPO = Path(__file__).resolve().parents[1]
MODELS_JSON = REPO / "SegResMambaSlicer" / "segresmamba" / "weights" / "models.json"
MODELS_SCHEMA = MODELS_JSON.with_name("models.schema.json")

BTCV_ORDER = [
    "background",
    "spleen",
    "right kidney",
    "left kidney",
    "gallbladder",
    "esophagus",
    "liver",
    "stomach",
    "aorta",
    "inferior vena cava",
    "portal vein and splenic vein",
    "pancreas",
    "right adrenal gland",
    "left adrenal gland",
]


@pytest.mark.parametrize(
    ("data_file", "schema_file"), [(TASKS_JSON, TASKS_SCHEMA_JSON), (MODELS_JSON, MODELS_SCHEMA)]
)
def test_registry_files_validate_against_their_schemas(data_file: Path, schema_file: Path) -> None:
    schema = json.loads(schema_file.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(
        json.loads(data_file.read_text(encoding="utf-8"))
    )


def test_the_four_tasks_exist() -> None:
    assert [task.name for task in list_tasks()] == ["btcv", "brats", "spleen", "phantom"]


def test_btcv_has_background_and_13_organs_in_btcv_order() -> None:
    task = get_task("btcv")
    assert [label.name for label in task.labels] == BTCV_ORDER
    assert [label.value for label in task.labels] == list(range(14))
    assert task.out_channels == 14 and task.in_channels == 1
    assert (task.modality, task.output) == ("CT", "softmax")
    assert task.spacing_mm == (1.5, 1.5, 2.0) and task.patch_size == (96, 96, 96)
    assert task.intensity == {
        "kind": "ct_window",
        "a_min": -175,
        "a_max": 250,
        "b_min": 0.0,
        "b_max": 1.0,
        "clip": True,
    }


def test_brats_has_four_ordered_inputs_and_three_sigmoid_regions() -> None:
    task = get_task("brats")
    assert [spec.name for spec in task.inputs] == ["FLAIR", "T1", "T1Gd", "T2"]
    assert task.output == "sigmoid" and task.out_channels == 3
    assert [label.abbreviation for label in task.labels] == ["TC", "WT", "ET"]
    assert task.intensity == {"kind": "zscore_nonzero"}
    assert task.spacing_mm == (1.0, 1.0, 1.0) and task.patch_size == (128, 128, 128)
    assert task.labelmap.values("2023") == (1, 2, 3)
    assert task.labelmap.values("2021") == (1, 2, 4)


def test_phantom_labels_are_the_generators_and_its_network_is_small() -> None:
    task = get_task("phantom")
    assert [(label.value, label.name) for label in task.foreground_labels] == [
        (1, "liver"),
        (2, "spleen"),
        (3, "right kidney"),
        (4, "left kidney"),
        (5, "aorta"),
    ]
    with torch.device("meta"):
        model = SegResMamba(**task.network_kwargs())
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert size < 10_000_000


def test_every_task_is_consistent() -> None:
    for task in list_tasks():
        assert all(s % 32 == 0 for s in task.patch_size), task.name
        assert all(f >= s for f, s in zip(task.fast_spacing_mm, task.spacing_mm)), task.name
        assert task.title and task.description and len(task.description) <= 200


def _all_labels():
    for task in list_tasks():
        for label in task.labels:
            yield task, label
        if task.labelmap is not None:
            for label in task.labelmap.labels:
                yield task, label


def test_every_label_has_a_colour_and_coded_terminology() -> None:
    for task, label in _all_labels():
        where = f"{task.name}/{label.name}"
        assert len(label.color) == 3 and all(0 <= c <= 1 for c in label.color), where
        term = label.terminology
        for code in (term.category, term.type):
            assert code.scheme in ("SCT", "DCM", "NCIt") and code.value and code.meaning, where
        if label.name == "background":
            continue
        assert term.category.scheme == "SCT" and term.category.value.isdigit(), where
        expected_category = "123037004" if task.modality == "CT" else "49755003"
        assert term.category.value == expected_category, where
        side = label.name.split()[0]
        if side in ("right", "left"):
            assert term.modifier.value == {"right": "24028007", "left": "7771000"}[side], where
            assert term.modifier.meaning.lower() == side, where
        else:
            assert term.modifier is None, where
        assert term["type"] is term.type  # readable like a dict too


@pytest.mark.parametrize(
    ("task_name", "label_name", "sct"),
    [
        ("btcv", "spleen", "78961009"),
        ("btcv", "right kidney", "64033007"),
        ("btcv", "gallbladder", "28231008"),
        ("btcv", "esophagus", "32849002"),
        ("btcv", "liver", "10200004"),
        ("btcv", "stomach", "69695003"),
        ("btcv", "aorta", "15825003"),
        ("btcv", "inferior vena cava", "64131007"),
        ("btcv", "pancreas", "15776009"),
        ("btcv", "left adrenal gland", "23451007"),
        ("brats", "tumour core", "108369006"),
        ("phantom", "aorta", "15825003"),
    ],
)
def test_snomed_codes(task_name: str, label_name: str, sct: str) -> None:
    assert get_task(task_name).label(label_name).terminology.type.value == sct


def test_unknown_task_names_the_known_ones() -> None:
    with pytest.raises(UnknownTaskError, match="known tasks: btcv, brats, spleen, phantom") as info:
        get_task("liver")
    assert isinstance(info.value, SegResMambaError)


def test_tasks_are_fresh_objects() -> None:
    get_task("btcv").network["widths"].append(768)
    assert get_task("btcv").network["widths"] == [48, 96, 192, 384]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t["tasks"][0].update(patch_size=[96, 96, 100]), "multiple of 32"),
        (lambda t: t["tasks"][0]["labels"].pop(3), "label values must run"),
        (lambda t: t["tasks"][0].pop("intensity"), "'intensity' is a required property"),
        (lambda t: t["tasks"][0]["network"].update(widths=[8, 16, 48, 64]), "twice the last"),
        (lambda t: t["tasks"][1]["labelmap"]["regions"].update(TC=[1, 2]), "does not reproduce"),
        (lambda t: t["tasks"].append(dict(t["tasks"][0])), "used twice"),
    ],
)
def test_a_broken_registry_is_refused(tmp_path: Path, change, message: str) -> None:
    data = json.loads(TASKS_JSON.read_text(encoding="utf-8"))
    change(data)
    broken = tmp_path / "tasks.json"
    broken.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(RegistryError, match=message):
        load_tasks(broken)


BRATS_2021 = [
    "BraTS2021_00000_flair.nii.gz",
    "BraTS2021_00000_t1.nii.gz",
    "BraTS2021_00000_t1ce.nii.gz",
    "BraTS2021_00000_t2.nii.gz",
]


def test_brats_inputs_are_recognised_by_name(shared_data: Path) -> None:
    task = get_task("brats")
    files = sorted((shared_data / "brats-gli-00001").glob("t*.nii.gz"))
    found = task.match_inputs(files)
    assert list(found) == ["FLAIR", "T1", "T1Gd", "T2"]
    assert [Path(p).name for p in found.values()] == [
        "t2f.nii.gz",
        "t1n.nii.gz",
        "t1c.nii.gz",
        "t2w.nii.gz",
    ]
    assert list(task.match_inputs(reversed(BRATS_2021)).values()) == BRATS_2021
    other = ["case_T2_FLAIR.nrrd", "case_T1w.nrrd", "case_T1_Gd.nrrd", "case_T2w.nrrd"]
    assert list(task.match_inputs(other).values()) == other


def test_brats_input_matching_says_what_is_wrong() -> None:
    task = get_task("brats")
    with pytest.raises(SegResMambaError, match="needs exactly one T2 image, found no file"):
        task.match_inputs(BRATS_2021[:3])
    with pytest.raises(SegResMambaError, match="cannot tell which brats input scan.nii.gz is"):
        task.match_inputs([*BRATS_2021[:3], "scan.nii.gz"])
    with pytest.raises(SegResMambaError, match="found 2 files"):
        task.match_inputs([*BRATS_2021, "other_flair.nii.gz"])


def test_brats_labelmap_and_regions_convert_both_ways(shared_data: Path) -> None:
    labelmap = get_task("brats").labelmap
    seg = sitk.GetArrayFromImage(
        sitk.ReadImage(str(shared_data / "brats-gli-00001" / "seg-BraTS23_1.nii.gz"))
    )
    assert set(np.unique(seg)) == {0, 1, 2, 3}
    regions = labelmap.to_regions(seg)
    tc, wt, et = regions
    assert np.array_equal(tc, np.isin(seg, [1, 3])) and np.array_equal(wt, seg > 0)
    assert np.array_equal(et, seg == 3)
    assert np.array_equal(labelmap.from_regions(regions), seg)
    seg_2021 = np.where(seg == 3, 4, seg)
    assert np.array_equal(labelmap.from_regions(regions, "2021"), seg_2021)
    assert np.array_equal(labelmap.to_regions(seg_2021, "2021"), regions)
    with pytest.raises(SegResMambaError, match="BraTS 2021 convention"):
        labelmap.to_regions(seg_2021, "2023")


def test_regions_that_are_not_nested_still_give_enhancing_tumour() -> None:
    labelmap = get_task("brats").labelmap
    regions = np.zeros((3, 4), dtype=bool)
    regions[2, 0] = True  # ET alone
    regions[1, 1] = True  # WT alone
    regions[0, 2] = True  # TC alone
    assert labelmap.from_regions(regions).tolist() == [3, 2, 1, 0]


def test_ct_tasks_use_the_issue_window():
    """CT tasks clip -175..250 HU and scale to 0..1 (the project's spec for btcv and spleen)."""
    for name in ("btcv", "spleen", "phantom"):
        intensity = get_task(name).intensity
        assert (intensity["a_min"], intensity["a_max"]) == (-175, 250), name
        assert (intensity["b_min"], intensity["b_max"]) == (0.0, 1.0), name


def test_per_channel_intensity_needs_one_rule_per_input_in_order() -> None:
    item = get_task("spleen").to_dict()
    item["name"] = "mine"
    item["intensity"] = {"kind": "per_channel", "channels": [{"kind": "zscore_nonzero"}] * 2}
    with pytest.raises(RegistryError, match="one rule per input"):
        task_from_dict(item)
    item["intensity"]["channels"] = [{"name": "MR", "kind": "zscore_nonzero"}]
    with pytest.raises(RegistryError, match="named"):
        task_from_dict(item)
    item["intensity"]["channels"] = [{"name": "CT", "kind": "zscore_nonzero"}]
    assert task_from_dict(item).intensity == item["intensity"]

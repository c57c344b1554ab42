"""Per-segment statistics against a case small enough to work out by hand, and ``--statistics``
through the real command."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from test_cli import assert_clean_failure, run_cli, work  # noqa: F401  (the fixture)

from segresmamba.errors import SegResMambaError
from segresmamba.io import Segment
from segresmamba.phantom import make_phantom
from segresmamba.statistics import segment_statistics, write_statistics

SPACING = (2.0, 1.0, 0.5)  # one voxel = 1 mm^3 = 0.001 mL
ORIGIN = (100.0, -50.0, 20.0)


def hand_case(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)) -> tuple[sitk.Image, sitk.Image]:
    """A 4x3x2 grid: organ 1 = four voxels at x 1..2, y 1, z 0..1 with 10, 20, 30, 40;
    organ 2 = one voxel (x 3, y 2, z 0) of value 7; organ 3 is empty."""
    labels = np.zeros((2, 3, 4), np.uint8)  # (z, y, x)
    values = np.full((2, 3, 4), -5.0)
    for (z, x), value in zip([(0, 1), (0, 2), (1, 1), (1, 2)], [10, 20, 30, 40]):
        labels[z, 1, x], values[z, 1, x] = 1, value
    labels[0, 2, 3], values[0, 2, 3] = 2, 7
    images = []
    for array in (labels, values):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(SPACING)
        image.SetOrigin(ORIGIN)
        image.SetDirection(direction)
        images.append(image)
    return images[0], images[1]


SEGMENTS = [
    Segment("liver", 1, (1, 0, 0)),
    Segment("spleen", 2, (0, 1, 0)),
    Segment("none", 3, (0, 0, 1)),
]


def test_numbers_match_the_hand_computation():
    labels, values = hand_case()
    liver, spleen, empty = segment_statistics("case", labels, values, SEGMENTS)
    assert (liver.voxel_count, liver.volume_ml) == (4, 0.004)
    assert liver.mean == 25.0
    assert liver.std == round(math.sqrt((15**2 + 5**2 + 5**2 + 15**2) / 4), 4)  # 11.1803
    # linear percentiles of 10, 20, 30, 40: position 0.05 * 3 and 0.95 * 3
    assert (liver.p5, liver.p95) == (11.5, 38.5)
    # voxel centres x = 100 + 2 * (1..2), y = -50 + 1, z = 20 + 0.5 * (0..1)
    assert liver.bbox_min_mm == (102.0, -49.0, 20.0)
    assert liver.bbox_max_mm == (104.0, -49.0, 20.5)
    assert (spleen.voxel_count, spleen.mean, spleen.std, spleen.p5, spleen.p95) == (1, 7, 0, 7, 7)
    assert spleen.bbox_min_mm == spleen.bbox_max_mm == (106.0, -48.0, 20.0)
    assert (empty.voxel_count, empty.volume_ml, empty.mean, empty.bbox_min_mm) == (0, 0, None, None)


def test_bounding_box_is_in_patient_millimetres_on_a_flipped_grid():
    labels, values = hand_case(direction=(-1, 0, 0, 0, 1, 0, 0, 0, -1))
    liver = segment_statistics("case", labels, values, SEGMENTS[:1])[0]
    assert liver.bbox_min_mm == (96.0, -49.0, 19.5)  # x = 100 - 2 * 2, z = 20 - 0.5
    assert liver.bbox_max_mm == (98.0, -49.0, 20.0)


def test_bounding_box_on_an_oblique_grid_matches_every_voxel_centre():
    """Issue 20, point 7: the box of the index-box corners is too big on a tilted grid."""
    ct, truth = make_phantom(3, size=(48, 40, 32))
    assert not np.allclose(np.reshape(truth.GetDirection(), (3, 3)), np.eye(3), atol=0.05)
    labels = sitk.GetArrayViewFromImage(truth)
    segments = [Segment(f"organ {v}", int(v), (1, 0, 0)) for v in np.unique(labels) if v]
    inflated = 0.0
    for segment, row in zip(segments, segment_statistics("case", truth, ct, segments)):
        z, y, x = np.nonzero(labels == segment.label_value)
        points = zip(x.tolist(), y.tolist(), z.tolist())
        centres = np.array([truth.TransformIndexToPhysicalPoint(p) for p in points])
        np.testing.assert_allclose(row.bbox_min_mm, centres.min(axis=0), atol=1e-3)
        np.testing.assert_allclose(row.bbox_max_mm, centres.max(axis=0), atol=1e-3)
        box = [(int(a.min()), int(a.max())) for a in (x, y, z)]
        corners = np.array(
            [
                truth.TransformIndexToPhysicalPoint((i, j, k))
                for i in box[0]
                for j in box[1]
                for k in box[2]
            ]
        )
        inflated = max(inflated, float(np.max(centres.min(axis=0) - corners.min(axis=0))))
    assert inflated > 1.0  # the corners' box really is bigger here: this test can tell them apart


def test_json_and_csv_files(tmp_path: Path):
    rows = segment_statistics("case", *hand_case(), SEGMENTS)
    document = json.loads(write_statistics(rows, tmp_path / "s.json").read_text(encoding="utf-8"))
    assert document["segments"][0]["volume_ml"] == 0.004
    assert document["segments"][0]["bbox_max_mm"] == [104.0, -49.0, 20.5]
    table = list(
        csv.DictReader((write_statistics(rows, tmp_path / "s.csv")).open(encoding="utf-8"))
    )
    assert [r["segment"] for r in table] == ["liver", "spleen", "none"]
    assert table[0]["p95"] == "38.5" and table[0]["bbox_min_x_mm"] == "102.0"
    assert table[2]["mean"] == "" and table[2]["voxel_count"] == "0"


def test_statistics_through_the_command(work: Path, tmp_path: Path):  # noqa: F811
    out, stats = tmp_path / "seg.nii.gz", tmp_path / "stats.csv"
    result = run_cli(
        "segment", "-t", "phantom", "-i", work / "ct1.nii.gz", "-o", out,
        "--model", work / "phantom.safetensors", "--fast", "--statistics", stats, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    table = list(csv.DictReader(stats.open(encoding="utf-8")))
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    assert {r["segment"] for r in table} == {
        "liver",
        "spleen",
        "right kidney",
        "left kidney",
        "aorta",
    }
    for row in table:
        assert int(row["voxel_count"]) == int((labels == int(row["label_value"])).sum())
    bad = run_cli(
        "segment", "-t", "phantom", "-i", work / "ct1.nii.gz", "-o", tmp_path / "b.nii.gz",
        "--model", work / "phantom.safetensors", "--statistics", tmp_path / "s.txt", cwd=tmp_path,
    )  # fmt: skip
    assert_clean_failure(bad, 2, "use a .json or .csv file name", tmp_path / "b.nii.gz")


def test_mismatched_grids_are_refused():
    labels, values = hand_case()
    values.SetOrigin((0.0, 0.0, 0.0))
    with pytest.raises(SegResMambaError, match="not on one grid"):
        segment_statistics("case", labels, values, SEGMENTS)

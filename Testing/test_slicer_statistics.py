"""The statistics table in Slicer (real MRML, slicer-core) holds the command line's numbers, and
Segment Statistics' measures (Slicer application only) take their place in it when present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer", reason="slicer-core (the test extra) is not installed")

from segresmamba.io import segments_for  # noqa: E402
from segresmamba.statistics import (  # noqa: E402
    SegmentStatistics,
    segment_statistics,
    write_statistics,
)
from segresmamba.tasks import get_task  # noqa: E402
from SegResMambaSlicerLib.headless import HeadlessSlicer, load_volume  # noqa: E402
from SegResMambaSlicerLib.segmentation import labels_to_segmentation  # noqa: E402
from SegResMambaSlicerLib.selftest import compare_statistics  # noqa: E402
from SegResMambaSlicerLib.statistics import (  # noqa: E402
    COLUMNS,
    measurements_by_segment,
    merge_slicer_measurements,
    result_statistics,
    save_statistics,
    segment_statistics_logic,
    statistics_table_node,
)


def test_table_equals_the_engine_statistics_of_the_same_labels(shared_data: Path, tmp_path: Path):
    path = shared_data / "ct-abdomen" / "example_ct_sm.nii.gz"
    headless = HeadlessSlicer.create()
    node = load_volume(headless, path)
    ct = sitk.ReadImage(str(path))
    labels = np.zeros(sitk.GetArrayViewFromImage(ct).shape, np.uint8)
    labels[5:9, 40:60, 30:70] = 1  # liver
    labels[12:20, 10:30, 10:25] = 3  # right kidney; spleen, left kidney and aorta stay empty
    task = get_task("phantom")
    segmentation = labels_to_segmentation(headless.scene, labels, task, node)

    rows = result_statistics(headless.scene, segmentation, node, task)
    labelmap = sitk.GetImageFromArray(labels)
    labelmap.CopyInformation(ct)
    expected = segment_statistics(node.GetName(), labelmap, ct, segments_for(task, labelmap))
    assert rows == expected
    assert rows[0].voxel_count == 4 * 20 * 40 and rows[0].mean is not None

    table_node = statistics_table_node(headless.scene, rows, "statistics")
    table = table_node.GetTable()
    assert table.GetNumberOfRows() == len(task.foreground_labels)
    assert [table.GetColumn(i).GetName() for i in range(len(COLUMNS))] == [c[1] for c in COLUMNS]
    assert table.GetValueByName(0, "Volume [mL]").ToString() == f"{rows[0].volume_ml:g}"
    assert table.GetValueByName(1, "Mean").ToString() == ""  # empty segment
    saved = save_statistics(rows, tmp_path / "slicer.csv")
    assert saved.read_text(encoding="utf-8") == write_statistics(
        expected, tmp_path / "cli.csv"
    ).read_text(encoding="utf-8")


def _hand_rows():
    """Two segments of one case: one measured, one empty."""
    liver = SegmentStatistics(
        "ct", "liver", 1, 100, 0.5, 60.0, 10.0, 45.0, 75.0, (0.0, 0.0, 0.0), (9.0, 9.0, 3.0)
    )
    spleen = SegmentStatistics("ct", "spleen", 2, 0, 0.0, None, None, None, None, None, None)
    return [liver, spleen]


def _segment_statistics_result(**liver) -> dict:
    """A result laid out as Slicer's SegmentStatisticsLogic.getStatistics() gives it."""
    plugin = "ScalarVolumeSegmentStatisticsPlugin"
    values = {"voxel_count": 100, "volume_cm3": 0.5, "mean": 60.00002, "stdev": 10.0}
    values |= {"percentile_05": 45.5, "percentile_95": 74.5, "min": 20.0} | liver
    statistics = {"SegmentIDs": ["Segment_1", "Segment_2"], "MeasurementInfo": {}}
    statistics["Segment_1", "Segment"] = "liver"
    statistics["Segment_2", "Segment"] = "spleen"
    for key, value in values.items():
        statistics["Segment_1", f"{plugin}.{key}"] = value
    statistics["Segment_2", f"{plugin}.voxel_count"] = 0
    statistics["Segment_2", f"{plugin}.volume_cm3"] = 0.0
    return statistics


def test_segment_statistics_values_replace_the_engines_but_the_bounding_box_stays():
    assert segment_statistics_logic() is None  # slicer-core has no Segment Statistics module
    rows = _hand_rows()
    measured = measurements_by_segment(_segment_statistics_result())
    assert measured["liver"] == {
        "voxel_count": 100,
        "volume_ml": 0.5,
        "mean": 60.00002,
        "std": 10.0,
        "p5": 45.5,
        "p95": 74.5,
    }
    liver, spleen = merge_slicer_measurements(rows, measured)
    assert (liver.mean, liver.p5, liver.p95) == (60.0, 45.5, 74.5)
    assert liver.bbox_min_mm == (0.0, 0.0, 0.0) and liver.bbox_max_mm == (9.0, 9.0, 3.0)
    assert spleen == rows[1]
    assert compare_statistics(rows, [liver, spleen]) == []  # within a histogram bin


def test_a_disagreeing_segment_statistics_result_is_reported(caplog):
    rows = _hand_rows()
    measured = measurements_by_segment(_segment_statistics_result(voxel_count=99, mean=61.0))
    with caplog.at_level("WARNING"):
        merged = merge_slicer_measurements(rows, measured)
    assert "Segment Statistics counts 99 voxels in liver, the engine 100" in caplog.text
    problems = compare_statistics(rows, merged)
    assert any("as 99 voxels" in p for p in problems)
    assert any(p.startswith("liver mean: Segment Statistics 61.0") for p in problems)


def test_the_table_says_which_logic_measured_it():
    headless = HeadlessSlicer.create()
    node = statistics_table_node(headless.scene, _hand_rows(), "t", source="Segment Statistics")
    assert node.GetAttribute("SegResMamba.StatisticsSource") == "Segment Statistics"
    assert (
        statistics_table_node(headless.scene, [], "t", table_node=node).GetAttribute(
            "SegResMamba.StatisticsSource"
        )
        == "engine"
    )

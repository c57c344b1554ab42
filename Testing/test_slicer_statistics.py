"""The statistics table in Slicer (real MRML, slicer-core) holds the command line's numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer", reason="slicer-core (the test extra) is not installed")

from segresmamba.io import segments_for  # noqa: E402
from segresmamba.statistics import segment_statistics, write_statistics  # noqa: E402
from segresmamba.tasks import get_task  # noqa: E402
from SegResMambaSlicerLib.headless import HeadlessSlicer, load_volume  # noqa: E402
from SegResMambaSlicerLib.segmentation import labels_to_segmentation  # noqa: E402
from SegResMambaSlicerLib.statistics import (  # noqa: E402
    COLUMNS,
    result_statistics,
    save_statistics,
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
    assert saved.read_text() == write_statistics(expected, tmp_path / "cli.csv").read_text()

"""DICOM SEG output on the real CT series (``../shared/data/ct-abdomen/example_ct_dicom``), read
back with pydicom and highdicom: pixels voxel for voxel, codes, colours, source references."""

from __future__ import annotations

import logging
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from helpers_segment import ThresholdNet
from test_cli import assert_clean_failure, run_cli

from segresmamba.cli import build_parser
from segresmamba.cli_segment import plan_cases
from segresmamba.errors import SegResMambaError
from segresmamba.inference import segment
from segresmamba.io import read_image
from segresmamba.io.dicom_seg import write_dicom_seg
from segresmamba.io.reader import dicom_series_files
from segresmamba.tasks import get_task

RIGHT_KIDNEY = 2  # BTCV label with a laterality modifier


@pytest.fixture(scope="module")
def series(shared_data: Path) -> Path:
    return shared_data / "ct-abdomen" / "example_ct_dicom"


@pytest.fixture(scope="module")
def known_labelmap(series: Path, shared_data: Path) -> sitk.Image:
    """The series' reference labels on the series' own grid, plus a planted right kidney."""
    ct = read_image(series)
    labels = sitk.ReadImage(str(shared_data / "ct-abdomen" / "example_seg_dicom.nii.gz"))
    labels = sitk.Resample(
        labels, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8
    )
    voxels = sitk.GetArrayFromImage(labels)
    voxels[voxels > 13] = 0  # BTCV has 13 organs; the TotalSegmentator ids above are not ours
    voxels[3:7, 200:230, 300:340] = RIGHT_KIDNEY
    result = sitk.GetImageFromArray(voxels)
    result.CopyInformation(ct)
    return result


def _source_uids(series: Path) -> list[str]:
    files = dicom_series_files(series)
    return [
        str(pydicom.dcmread(f, stop_before_pixels=True).file_meta.MediaStorageSOPInstanceUID)
        for f in files
    ]


def test_segments_equal_the_labelmap_voxel_for_voxel(series, known_labelmap, tmp_path, caplog):
    task = get_task("btcv")
    log = logging.getLogger("segresmamba.io")  # the handler directly: the CLI may stop propagation
    log.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="segresmamba.io"):
            path = write_dicom_seg(known_labelmap, tmp_path / "result.dcm", task, series)
    finally:
        log.removeHandler(caplog.handler)
    seg = hd.seg.segread(path)
    assert seg.SOPClassUID == pydicom.uid.SegmentationStorage
    voxels = sitk.GetArrayFromImage(known_labelmap)
    present = [label for label in task.foreground_labels if (voxels == label.value).any()]
    assert len(present) >= 3  # spleen, liver and the planted kidney at least
    assert [s.SegmentLabel for s in seg.SegmentSequence] == [label.name for label in present]
    empty = [label.name for label in task.foreground_labels if label not in present]
    assert empty and "empty segments omitted: " + ", ".join(empty) in caplog.text

    uids = _source_uids(series)
    referenced = [
        item.ReferencedSOPInstanceUID
        for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    ]
    assert sorted(referenced) == sorted(uids)
    pixels = seg.get_pixels_by_source_instance(uids, assert_missing_frames_are_empty=True)
    assert pixels.shape == (*voxels.shape, len(present))
    for number, label in enumerate(present):
        np.testing.assert_array_equal(pixels[..., number], voxels == label.value)


def test_codes_and_colours_are_the_task_labels(series, known_labelmap, tmp_path):
    task = get_task("btcv")
    path = write_dicom_seg(known_labelmap, tmp_path / "codes.dcm", task, series)
    dataset = pydicom.dcmread(path)
    labels = {label.name: label for label in task.foreground_labels}
    for item in dataset.SegmentSequence:
        label = labels[item.SegmentLabel]
        codes = label.terminology
        category = item.SegmentedPropertyCategoryCodeSequence[0]
        kind = item.SegmentedPropertyTypeCodeSequence[0]
        assert (category.CodeValue, category.CodingSchemeDesignator) == (
            codes.category.value,
            codes.category.scheme,
        )
        assert (kind.CodeValue, kind.CodeMeaning) == (codes.type.value, codes.type.meaning)
        if codes.modifier is not None:
            modifier = kind.SegmentedPropertyTypeModifierCodeSequence[0]
            assert modifier.CodeValue == codes.modifier.value
        back = hd.color.CIELabColor.from_dicom_value(item.RecommendedDisplayCIELabValue).to_rgb()
        np.testing.assert_allclose(np.array(back) / 255, label.color, atol=2 / 255)
    assert any(
        "SegmentedPropertyTypeModifierCodeSequence" in item.SegmentedPropertyTypeCodeSequence[0]
        for item in dataset.SegmentSequence
    ), "the right kidney carries its laterality"


def test_non_dicom_input_is_refused(shared_data, tmp_path):
    image = shared_data / "ct-abdomen" / "example_ct_sm.nii.gz"
    with pytest.raises(SegResMambaError, match="DICOM SEG output needs a DICOM series folder"):
        write_dicom_seg(read_image(image), tmp_path / "x.dcm", get_task("btcv"), image)
    result = run_cli(
        "segment", "-t", "phantom", "-i", image, "-o", tmp_path / "x.dcm", cwd=tmp_path
    )
    assert_clean_failure(result, 2, "needs a DICOM series folder", tmp_path / "x.dcm")


def test_pipeline_output_on_the_series_goes_into_the_seg_unchanged(series, tmp_path):
    """The real pipeline's labelmap for the real series (a ThresholdNet, so it runs in seconds)
    written as DICOM SEG: every segment equals the labelmap output voxel for voxel."""
    ct = read_image(series)
    labelmap = segment(ct, "phantom", ThresholdNet([0.2, 0.5, 0.7, 0.9], 6), fast=True)
    task = get_task("phantom")
    path = write_dicom_seg(labelmap, tmp_path / "pipeline.dcm", task, series)
    voxels = sitk.GetArrayFromImage(labelmap)
    present = [label for label in task.foreground_labels if (voxels == label.value).any()]
    assert len(present) >= 3
    seg = hd.seg.segread(path)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == [label.name for label in present]
    pixels = seg.get_pixels_by_source_instance(
        _source_uids(series), assert_missing_frames_are_empty=True
    )
    for number, label in enumerate(present):
        np.testing.assert_array_equal(pixels[..., number], voxels == label.value)


def test_format_dicom_seg_names_cohort_outputs_and_checks_inputs_first(
    series, shared_data, tmp_path
):
    parser = build_parser()
    options = ["segment", "-t", "phantom", "--format", "dicom-seg", "-o", str(tmp_path / "out")]
    args = parser.parse_args([*options, "-i", str(series), "-i", str(tmp_path / "b")])
    (tmp_path / "b").mkdir()
    cases = plan_cases(args, get_task("phantom"))
    assert [c.output.name for c in cases] == ["example_ct_dicom_phantom.dcm", "b_phantom.dcm"]
    nifti = shared_data / "ct-abdomen" / "example_ct_sm.nii.gz"
    args = parser.parse_args([*options, "-i", str(series), "-i", str(nifti)])
    with pytest.raises(SegResMambaError, match="got example_ct_sm.nii.gz"):
        plan_cases(args, get_task("phantom"))

"""Damaged inputs are refused before any work, in one line naming the file (issue 20, points
1-4): truncated or corrupt compressed images, a DICOM series with a missing slice, DICOM
headers a DICOM SEG cannot be made from, series in subfolders, and an empty result as SEG.

Everything is cut from the real scans in ../shared/data: crops of the demo CT written by
SimpleITK, and copies of the real CT series with a slice deleted or a header edited.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from helpers_segment import assert_same_grid, tiny_checkpoint
from test_cli import assert_clean_failure, run_cli

from segresmamba.errors import SegResMambaError
from segresmamba.io import read_image
from segresmamba.io.dicom_seg import write_dicom_seg
from segresmamba.io.reader import dicom_series_files
from segresmamba.tasks import get_task

SUFFIXES = (".nii.gz", ".nrrd", ".mha")


@pytest.fixture(scope="module")
def series(shared_data: Path) -> Path:
    return shared_data / "ct-abdomen" / "example_ct_dicom"


@pytest.fixture(scope="module")
def work(shared_data: Path, tmp_path_factory) -> Path:
    """A tiny phantom model, a real CT crop in three compressed formats, each also cut in half
    ("cut") and with 2000 bytes of its compressed stream zeroed ("zeroed"), and the demo CT
    cut to its first 300,000 bytes (the issue's reproduction)."""
    folder = tmp_path_factory.mktemp("damaged")
    tiny_checkpoint(folder / "phantom.safetensors", "phantom")
    demo = shared_data / "ct-abdomen" / "example_ct.nii.gz"
    (folder / "demo_cut.nii.gz").write_bytes(demo.read_bytes()[:300_000])
    crop = sitk.ReadImage(str(demo))[29:93, 18:82, 40:72]
    for suffix in SUFFIXES:
        sitk.WriteImage(crop, str(folder / f"crop{suffix}"), useCompression=True)
        data = (folder / f"crop{suffix}").read_bytes()
        (folder / f"cut{suffix}").write_bytes(data[: len(data) // 2])
        zeroed = bytearray(data)
        zeroed[len(data) // 2 : len(data) // 2 + 2000] = bytes(2000)
        (folder / f"zeroed{suffix}").write_bytes(bytes(zeroed))
    return folder


def _segment(work: Path, *arguments) -> object:
    return run_cli(
        "segment", "-t", "phantom", "--model", "phantom.safetensors", *arguments, cwd=work
    )


@pytest.mark.parametrize("name", ["demo_cut.nii.gz", *(f"cut{s}" for s in SUFFIXES)])
def test_truncated_compressed_images_are_refused_in_one_line(work, name):
    output = work / f"out-{name.replace('.', '-')}.nii.gz"
    result = _segment(work, "-i", name, "-o", output)
    assert_clean_failure(result, 2, f"cannot read {name}: it is truncated or damaged", output)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_corrupt_compressed_streams_are_refused(work, suffix):
    """ITK reads these as plausible voxels; the stream's checksum says otherwise."""
    assert read_image(work / f"crop{suffix}").GetSize() == (64, 64, 32)
    with pytest.raises(SegResMambaError, match=f"zeroed{suffix}: it is truncated or damaged"):
        read_image(work / f"zeroed{suffix}")


@pytest.mark.parametrize("suffix", [".nii", ".nrrd", ".mha"])
def test_uncompressed_images_shorter_than_their_header_are_refused(work, tmp_path, suffix):
    image = read_image(work / "crop.nii.gz")
    sitk.WriteImage(image, str(tmp_path / f"whole{suffix}"), useCompression=False)
    data = (tmp_path / f"whole{suffix}").read_bytes()
    (tmp_path / f"short{suffix}").write_bytes(data[:-1000])
    assert read_image(tmp_path / f"whole{suffix}").GetSize() == (64, 64, 32)
    with pytest.raises(
        SegResMambaError, match=r"short\S*: it is truncated .* holds 52\d,\d+ of the 52\d,\d+ bytes"
    ):
        read_image(tmp_path / f"short{suffix}")


def test_a_cohort_refuses_the_truncated_case_and_segments_the_others(work):
    out = work / "cohort"
    result = _segment(work, "-i", "crop.nii.gz", "-i", "demo_cut.nii.gz", "-o", f"{out}/")
    assert result.returncode == 2, result.stderr
    assert "demo_cut.nii.gz: it is truncated or damaged" in result.stderr
    assert "Traceback" not in result.stderr
    assert (out / "crop_phantom.nii.gz").is_file()
    assert not (out / "demo_cut_phantom.nii.gz").exists()


@pytest.fixture(scope="module")
def gapped(series: Path, tmp_path_factory) -> tuple[Path, int]:
    """The real CT series (20 slices, 2 mm) with its 10th slice deleted, and that index."""
    folder = tmp_path_factory.mktemp("gapped") / "gapped"
    shutil.copytree(series, folder)
    missing = 9
    Path(dicom_series_files(folder)[missing]).unlink()
    return folder, missing


def test_a_series_with_a_missing_slice_is_refused_naming_the_gap(gapped, work):
    folder, _missing = gapped
    for output in (work / "gap.nii.gz", work / "gap.dcm"):
        result = _segment(work, "-i", folder, "-o", output)
        assert_clean_failure(result, 2, "not evenly spaced: a gap of 4.00 mm", output)
        assert "between slices 9 and 10 of 19" in result.stderr
        assert "16.0-20.0 mm from the first slice" in result.stderr
        assert "Non uniform sampling" not in result.stderr  # ITK's raw warning is silenced
    assert "--resample-gaps" in result.stderr


def test_resample_gaps_reads_the_series_onto_its_true_grid(gapped, series, caplog):
    folder, missing = gapped
    full = read_image(series)
    log = logging.getLogger("segresmamba.io")  # the handler directly: the CLI may stop propagation
    log.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger="segresmamba.io"):
            regular = read_image(folder, resample_gaps=True)
    finally:
        log.removeHandler(caplog.handler)
    assert "read onto a regular grid of 20 slices 2.00 mm apart" in caplog.text
    assert_same_grid(regular, full)  # every slice where the complete series has it
    got, truth = sitk.GetArrayFromImage(regular), sitk.GetArrayFromImage(full).astype(np.float32)
    kept = [k for k in range(20) if k != missing]
    np.testing.assert_array_equal(got[kept], truth[kept])
    np.testing.assert_allclose(got[missing], (truth[missing - 1] + truth[missing + 1]) / 2)


def test_a_slice_stored_twice_is_refused_even_with_resample_gaps(series, tmp_path):
    folder = tmp_path / "twice"
    shutil.copytree(series, folder)
    copy = pydicom.dcmread(dicom_series_files(folder)[5])
    copy.SOPInstanceUID = copy.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.20.5"
    copy.save_as(folder / "copy.dcm")
    for resample in (False, True):
        with pytest.raises(SegResMambaError, match="two slices at the same position.*cannot mend"):
            read_image(folder, resample_gaps=resample)


def test_resample_gaps_on_the_command_line_says_so(gapped, work):
    """Stopped at a missing model (seconds, not minutes of inference): the read went through."""
    folder, _missing = gapped
    result = run_cli(
        "segment", "-t", "phantom", "--model", "absent.safetensors", "--resample-gaps",
        "-i", folder, "-o", work / "resampled.nii.gz", cwd=work,
    )  # fmt: skip
    assert "warning: the DICOM series gapped is not evenly spaced" in result.stderr
    assert "read onto a regular grid of 20 slices" in result.stderr
    assert "Non uniform sampling" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "absent.safetensors" in result.stderr


def test_series_in_subfolders_are_read(series, tmp_path, work):
    """A study folder with the series split over two subfolders reads as the whole series."""
    files = dicom_series_files(series)
    for index, file in enumerate(files):
        part = tmp_path / "study" / ("first" if index < 10 else "second") / "CT"
        part.mkdir(parents=True, exist_ok=True)
        shutil.copy(file, part / Path(file).name)
    (tmp_path / "study" / "notes.txt").write_text("not DICOM", encoding="utf-8")
    regular = read_image(tmp_path / "study")
    assert_same_grid(regular, read_image(series))
    assert dicom_series_files(tmp_path / "study") == [
        str(tmp_path / "study" / ("first" if i < 10 else "second") / "CT" / Path(f).name)
        for i, f in enumerate(files)
    ]
    (tmp_path / "nothing" / "empty").mkdir(parents=True)
    (tmp_path / "nothing" / "notes.txt").write_text("not DICOM", encoding="utf-8")
    result = _segment(work, "-i", tmp_path / "nothing", "-o", tmp_path / "x.nii.gz")
    assert_clean_failure(result, 2, "holds no DICOM series (subfolders included)")


def _edited_series(series: Path, folder: Path, edit) -> Path:
    files = dicom_series_files(series)
    folder.mkdir()
    for index, file in enumerate(files):
        dataset = pydicom.dcmread(file)
        edit(index, dataset)
        dataset.save_as(folder / Path(file).name)
    return folder


def _drop(keyword):
    def edit(_index, dataset):
        delattr(dataset, keyword)

    return edit


def _two_studies(index, dataset):
    dataset.StudyInstanceUID = "1.2.826.0.1.3680043.2.1125.20.1" if index < 10 else "1.2.3.4"


@pytest.mark.parametrize(
    "edit, message",
    [
        (_drop("FrameOfReferenceUID"), "has no FrameOfReferenceUID (0020,0052)"),
        (_drop("PatientID"), "lacks PatientID, which a DICOM SEG copies from it"),
        (_two_studies, "is one series split across 2 studies (StudyInstanceUID"),
    ],
    ids=["no-frame-of-reference", "no-patient-id", "two-studies"],
)
def test_headers_a_seg_cannot_use_are_refused_before_inference(
    series, tmp_path, work, edit, message
):
    folder = _edited_series(series, tmp_path / "edited", edit)
    output = tmp_path / "result.dcm"
    result = _segment(work, "-i", folder, "-o", output)
    assert_clean_failure(result, 2, message, output)
    assert "write .seg.nrrd or .nii.gz instead" in result.stderr
    assert read_image(folder).GetSize() == (512, 512, 20)  # other formats stay open


def test_an_empty_result_is_a_valid_seg_that_says_so(series, tmp_path, caplog):
    ct = read_image(series)
    empty = sitk.Image(ct.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(ct)
    log = logging.getLogger("segresmamba.io")
    log.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger="segresmamba.io"):
            path = write_dicom_seg(empty, tmp_path / "empty.dcm", get_task("btcv"), series)
    finally:
        log.removeHandler(caplog.handler)
    assert "the result is empty (no btcv structure found)" in caplog.text
    seg = hd.seg.segread(path)
    assert seg.ContentDescription.startswith("nothing found")
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["spleen"]
    uids = [
        str(pydicom.dcmread(f, stop_before_pixels=True).file_meta.MediaStorageSOPInstanceUID)
        for f in dicom_series_files(series)
    ]
    pixels = seg.get_pixels_by_source_instance(uids, assert_missing_frames_are_empty=True)
    assert pixels.shape == (20, 512, 512, 1) and not pixels.any()

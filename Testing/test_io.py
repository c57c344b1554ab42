"""segresmamba.io: reading with geometry, one-line input checks, atomic writers, .seg.nrrd."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nrrd
import numpy as np
import pytest
import SimpleITK as sitk

from segresmamba.errors import SegResMambaError
from segresmamba.io import (
    atomic_output,
    read_image,
    terminology_entry,
    validate_image,
    write_image,
    write_labelmap,
)
from segresmamba.phantom import make_phantom, rotation_matrix
from segresmamba.tasks import get_task


def volume(size=(20, 18, 12), value=None, dtype=np.int16, seed=0) -> sitk.Image:
    """A small oblique test volume with a non-trivial grid."""
    rng = np.random.default_rng(seed)
    voxels = (
        rng.integers(-100, 100, size[::-1]).astype(dtype)
        if value is None
        else np.full(size[::-1], value, dtype)
    )
    image = sitk.GetImageFromArray(voxels)
    image.SetSpacing((0.8, 1.1, 2.5))
    image.SetOrigin((-12.5, 40.0, 7.25))
    image.SetDirection(tuple(rotation_matrix((4, -3, 10)).ravel()))
    return image


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha", ".nii"])
def test_round_trip_keeps_geometry_and_voxels(tmp_path, suffix):
    image = volume()
    path = write_image(image, tmp_path / f"ct{suffix}")
    back = read_image(path)
    assert back.GetSize() == image.GetSize()
    np.testing.assert_allclose(back.GetSpacing(), image.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(back.GetOrigin(), image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(back.GetDirection(), image.GetDirection(), atol=1e-5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~current_umask())


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_dicom_series_has_the_geometry_of_its_reference_labels(shared_data):
    """The labels' NIfTI stores the same grid flipped in y (LAS); reoriented to the series' LPS
    it must coincide, and the labels must sit on the right tissue of the CT."""
    ct = read_image(shared_data / "ct-abdomen" / "example_ct_dicom")
    labels = sitk.ReadImage(str(shared_data / "ct-abdomen" / "example_seg_dicom.nii.gz"))
    assert ct.GetSize() == labels.GetSize() == (512, 512, 20)
    reoriented = sitk.DICOMOrient(labels, "LPS")
    np.testing.assert_allclose(ct.GetSpacing(), reoriented.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(ct.GetOrigin(), reoriented.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(ct.GetDirection(), reoriented.GetDirection(), atol=1e-6)
    # In physical space (not by voxel index) spleen, liver and aorta fall on their HU ranges.
    on_ct = sitk.Resample(labels, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    hu, ids = sitk.GetArrayViewFromImage(ct), sitk.GetArrayViewFromImage(on_ct)
    for label, low, high in ((1, 40, 130), (5, 40, 130), (52, 120, 400)):  # TotalSegmentator ids
        assert low < np.median(hu[ids == label]) < high


def test_dicom_folder_picks_the_series_with_most_files(shared_data, tmp_path):
    for file in (shared_data / "ct-abdomen" / "example_ct_dicom").iterdir():
        shutil.copy(file, tmp_path / file.name)
    # A three-slice localizer-like second series beside the main one.
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(3):
        slice_ = sitk.GetImageFromArray(np.full((1, 16, 16), k, np.int16))
        for tag, value in {
            "0020|000e": "1.2.826.0.1.3680043.2.1125.99.1",  # series instance UID
            "0020|000d": "1.2.826.0.1.3680043.2.1125.99.2",
            "0008|0018": f"1.2.826.0.1.3680043.2.1125.99.3.{k}",
            "0008|0060": "CT",
            "0020|0032": f"0\\0\\{k * 5}",
            "0020|0013": str(k + 1),
        }.items():
            slice_.SetMetaData(tag, value)
        writer.SetFileName(str(tmp_path / f"scout{k}.dcm"))
        writer.Execute(slice_)
    assert len(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(tmp_path))) == 2
    ct = read_image(tmp_path)
    assert ct.GetSize() == (512, 512, 20)


def test_empty_and_non_dicom_folders_are_clear_errors(tmp_path):
    with pytest.raises(SegResMambaError, match="is empty"):
        read_image(tmp_path)
    (tmp_path / "notes.txt").write_text("not an image", encoding="utf-8")
    with pytest.raises(SegResMambaError, match="holds no DICOM series"):
        read_image(tmp_path)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(SegResMambaError, match="does not exist"):
        read_image(tmp_path / "nothing.nii.gz")
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b" + os.urandom(500))
    with pytest.raises(SegResMambaError, match="cannot read .*broken.nii.gz"):
        read_image(broken)


def test_bad_images_are_rejected_with_one_line(tmp_path):
    cases = {
        "2D": sitk.GetImageFromArray(np.arange(400, dtype=np.int16).reshape(20, 20)),
        "single slice": sitk.GetImageFromArray(np.arange(400, dtype=np.int16).reshape(1, 20, 20)),
        "4D": sitk.JoinSeries([volume(), volume(seed=1)]),
        "vector": sitk.Compose([volume(), volume(seed=1)]),
        "constant": volume(value=7),
    }
    nan = sitk.GetArrayFromImage(volume()).astype(np.float32)
    nan[3, 4, 5] = np.nan
    cases["NaN"] = sitk.GetImageFromArray(nan)
    inf = nan.copy()
    inf[3, 4, 5] = np.inf
    cases["Inf"] = sitk.GetImageFromArray(inf)
    expected = {
        "2D": "2D image",
        "single slice": "2D image",
        "4D": "is 4D",
        "vector": "values per voxel",
        "constant": "blank",
        "NaN": "NaN or infinite",
        "Inf": "NaN or infinite",
    }
    for name, image in cases.items():
        with pytest.raises(SegResMambaError, match=expected[name]) as caught:
            validate_image(image, name)
        assert "\n" not in str(caught.value)
        for suffix in (".nrrd", ".nii.gz"):  # ITK's NIfTI reader turns NaN/Inf into 0 itself
            path = tmp_path / f"{name.replace(' ', '_')}{suffix}"
            sitk.WriteImage(image, str(path))
            with pytest.raises(SegResMambaError, match=expected[name]):
                read_image(path)


def test_a_4d_file_holding_one_volume_reads_as_3d(tmp_path):
    single = sitk.JoinSeries([volume()])
    sitk.WriteImage(single, str(tmp_path / "one.nii.gz"))
    image = read_image(tmp_path / "one.nii.gz")
    assert image.GetDimension() == 3 and image.GetSize() == (20, 18, 12)


def test_existing_output_is_refused_unless_overwrite(tmp_path):
    target = tmp_path / "seg.nii.gz"
    write_image(volume(), target)
    before = target.read_bytes()
    with pytest.raises(SegResMambaError, match="already exists; use --overwrite"):
        write_image(volume(seed=3), target)
    assert target.read_bytes() == before
    write_image(volume(seed=3), target, overwrite=True)
    assert target.read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.nii.gz"]


def test_unwritable_or_missing_folder_is_a_clean_error(tmp_path):
    with pytest.raises(SegResMambaError, match="does not exist"):
        write_image(volume(), tmp_path / "no" / "such" / "seg.nii.gz")
    locked = unwritable_folder(tmp_path)
    with pytest.raises(SegResMambaError, match="cannot write"):
        write_image(volume(), locked / "seg.nii.gz")
    assert not (locked / "seg.nii.gz").exists()


def unwritable_folder(tmp_path: Path) -> Path:
    """A folder this process cannot create files in (root ignores permission bits: use /sys)."""
    if os.geteuid() == 0:
        return Path("/sys")
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    return folder


def test_failure_while_writing_leaves_nothing_behind(tmp_path):
    target = tmp_path / "seg.nrrd"
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_output(target) as temporary:
            temporary.write_bytes(b"half a file")
            raise RuntimeError("disk on fire")
    assert list(tmp_path.iterdir()) == []


def test_unknown_output_format(tmp_path):
    with pytest.raises(SegResMambaError, match="unknown output format"):
        write_labelmap(volume(), tmp_path / "seg.png", get_task("phantom"))


def test_seg_nrrd_header_is_what_slicer_reads(tmp_path):
    ct, truth = make_phantom(0, size=(48, 40, 24))
    task = get_task("phantom")
    path = write_labelmap(truth, tmp_path / "truth.seg.nrrd", task)
    data, header = nrrd.read(str(path))
    assert header["space"] == "left-posterior-superior"
    np.testing.assert_allclose(header["space origin"], truth.GetOrigin())
    direction = np.array(truth.GetDirection()).reshape(3, 3) * np.array(truth.GetSpacing())
    np.testing.assert_allclose(header["space directions"], direction.T)
    np.testing.assert_array_equal(data, sitk.GetArrayFromImage(truth).transpose(2, 1, 0))
    assert header["Segmentation_MasterRepresentation"] == "Binary labelmap"
    assert header["Segmentation_ContainedRepresentationNames"] == "Binary labelmap|"
    assert header["Segmentation_ReferenceImageExtentOffset"] == "0 0 0"
    for i, label in enumerate(task.foreground_labels):
        assert header[f"Segment{i}_Name"] == label.name
        assert header[f"Segment{i}_LabelValue"] == str(label.value)
        assert header[f"Segment{i}_Layer"] == "0"
        present = np.argwhere(data == label.value)
        extent = " ".join(f"{lo} {hi}" for lo, hi in zip(present.min(0), present.max(0)))
        assert header[f"Segment{i}_Extent"] == extent
        assert (
            f"TerminologyEntry:{terminology_entry(label.terminology)}|"
            in header[f"Segment{i}_Tags"]
        )
    spleen = header["Segment1_Tags"]
    assert (
        "Segmentation category and type - DICOM master list~SCT^123037004^Anatomical "
        "Structure~SCT^78961009^Spleen~^^~Anatomic codes - DICOM master list~^^~^^" in spleen
    )
    assert "SCT^64033007^Kidney~SCT^24028007^Right~" in header["Segment2_Tags"]


def test_seg_nrrd_opens_in_slicer_with_names_colours_and_codes(tmp_path):
    slicer = pytest.importorskip("slicer", reason="slicer-core (the test extra) is not installed")
    import vtk

    _, truth = make_phantom(0, size=(48, 40, 24))
    task = get_task("phantom")
    path = write_labelmap(truth, tmp_path / "truth.seg.nrrd", task)
    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == len(task.foreground_labels)
    for i, label in enumerate(task.foreground_labels):
        segment = segmentation.GetNthSegment(i)
        assert segment.GetName() == label.name
        np.testing.assert_allclose(segment.GetColor(), label.color, atol=1e-6)
        entry = vtk.mutable("")
        assert segment.GetTag("TerminologyEntry", entry)
        assert str(entry) == terminology_entry(label.terminology)


def test_overlapping_brats_regions_go_into_layers(tmp_path):
    task = get_task("brats")
    wt = np.zeros((10, 12, 14), np.uint8)
    wt[2:8, 2:10, 2:12] = 1
    tc = np.zeros_like(wt)
    tc[3:6, 4:8, 4:9] = 1
    et = np.zeros_like(wt)
    et[4:5, 5:7, 5:7] = 1
    components = [sitk.GetImageFromArray(mask) for mask in (tc, wt, et)]
    regions = sitk.Compose(components)
    regions.SetSpacing((1.0, 1.0, 1.0))
    path = write_labelmap(regions, tmp_path / "regions.seg.nrrd", task)
    data, header = nrrd.read(str(path))
    assert data.shape == (3, 14, 12, 10)
    assert header["kinds"] == ["list", "domain", "domain", "domain"]
    for i, (label, mask) in enumerate(zip(task.labels, (tc, wt, et))):
        assert header[f"Segment{i}_Name"] == label.name
        assert header[f"Segment{i}_Layer"] == str(i)
        assert header[f"Segment{i}_LabelValue"] == "1"
        np.testing.assert_array_equal(data[i], mask.transpose(2, 1, 0))

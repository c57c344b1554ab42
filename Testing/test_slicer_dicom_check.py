"""The module warns about a volume from Slicer's DICOM database whose series misses a slice
(issue 20, point 2), on real MRML (slicer-core) and the real CT series with a slice deleted.

slicer-core has no ctkDICOMDatabase, so ``slicer.dicomDatabase.fileForInstance`` is stood in
for by the real mapping from each copied file's SOP Instance UID to its path; the rest (the
volume node, its ``DICOM.instanceUIDs`` attribute as Slicer's DICOM loader sets it, the engine's
check of the files) is real.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer", reason="slicer-core (the test extra) is not installed")

from segresmamba.io.dicom_series import regular_grid, slice_layout  # noqa: E402
from segresmamba.io.reader import dicom_series_files  # noqa: E402
from SegResMambaSlicerLib.dicom_check import (  # noqa: E402
    INSTANCE_UIDS,
    dicom_files,
    dicom_gap_warnings,
)
from SegResMambaSlicerLib.headless import HeadlessSlicer, load_volume  # noqa: E402


@pytest.fixture(scope="module")
def loaded(shared_data, tmp_path_factory):
    """The complete and the gapped series as Slicer's loader leaves them: slices stacked at
    one spacing, ``DICOM.instanceUIDs`` naming one instance per slice; and the gapped series
    after regularization (its voxels resampled where the files say they lie)."""
    folder = tmp_path_factory.mktemp("slicer_dicom")
    gapped = folder / "gapped"
    shutil.copytree(shared_data / "ct-abdomen" / "example_ct_dicom", gapped)
    Path(dicom_series_files(gapped)[9]).unlink()
    headless = HeadlessSlicer.create()
    database: dict[str, str] = {}
    nodes = {}
    for name, source in (
        ("complete", shared_data / "ct-abdomen" / "example_ct_dicom"),
        ("gapped", gapped),
    ):
        files = dicom_series_files(source)
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        stacked = reader.Execute()
        uids = []
        for file in files:
            uid = str(
                pydicom.dcmread(file, stop_before_pixels=True).file_meta.MediaStorageSOPInstanceUID
            )
            database[uid] = file
            uids.append(uid)
        sitk.WriteImage(stacked, str(folder / f"{name}.nrrd"))
        nodes[name] = load_volume(headless, folder / f"{name}.nrrd", name)
        nodes[name].SetAttribute(INSTANCE_UIDS, " ".join(uids))
        if name == "gapped":
            fixed = regular_grid(stacked, slice_layout(files))[:, :, :-1]  # same 19 slices
            sitk.WriteImage(fixed, str(folder / "regularized.nrrd"))
            nodes["regularized"] = load_volume(headless, folder / "regularized.nrrd", "regularized")
            nodes["regularized"].SetAttribute(INSTANCE_UIDS, " ".join(uids))
    nodes["plain"] = load_volume(headless, folder / "complete.nrrd", "plain")
    return nodes, database


def test_a_volume_with_a_missing_slice_is_warned_about(loaded):
    nodes, database = loaded
    files = dicom_files(nodes["gapped"], database.get)
    assert len(files) == 19 and all(Path(f).parent.name == "gapped" for f in files)
    warnings = dicom_gap_warnings([nodes["gapped"]], database.get)
    assert len(warnings) == 1
    assert "'gapped' is not evenly spaced: a gap of 4.00 mm" in warnings[0]
    assert "between slices 9 and 10 of 19" in warnings[0]
    assert "acquisition geometry regularization" in warnings[0]


def test_complete_regularized_and_non_dicom_volumes_are_not_warned_about(loaded):
    nodes, database = loaded
    assert dicom_gap_warnings([nodes["complete"], None, nodes["plain"]], database.get) == []
    # the voxels no longer are the files' slices: as after Slicer's hardened regularization
    assert dicom_gap_warnings([nodes["regularized"]], database.get) == []


def test_files_unknown_to_the_database_are_not_checked(loaded):
    nodes, _database = loaded
    assert dicom_files(nodes["gapped"], {}.get) == []
    assert dicom_gap_warnings([nodes["gapped"]], {}.get) == []
    assert dicom_files(nodes["plain"], {}.get) == []
    if getattr(slicer, "dicomDatabase", None) is None:  # slicer-core: no DICOM database at all
        assert dicom_gap_warnings([nodes["gapped"]]) == []

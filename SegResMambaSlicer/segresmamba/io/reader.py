"""Reading scans with their geometry: NIfTI, NRRD, MHA files and DICOM series folders."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import SegResMambaError
from .checks import non_finite_message, validate_image

__all__ = ["dicom_series_files", "read_dicom_series", "read_image", "series_description"]

_log = logging.getLogger("segresmamba.io")


def read_image(path: str | os.PathLike, check: bool = True) -> sitk.Image:
    """Read a 3D scan from a file or a DICOM series folder, keeping size, spacing, origin and
    direction exactly as stored (all downstream geometry is derived from them).

    With ``check`` (default) the image also passes :func:`validate_image`: unreadable files,
    2D, 4D or vector images, NaN/Inf voxels and constant images raise a one-line
    SegResMambaError instead of failing deep inside the pipeline.
    """
    path = Path(path)
    if path.is_dir():
        image = read_dicom_series(path)
    elif not path.exists():
        raise SegResMambaError(f"input {path} does not exist")
    else:
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError:
            raise SegResMambaError(
                f"cannot read {path}: not a readable NIfTI, NRRD, MHA or DICOM image (damaged, "
                "truncated or another format)"
            ) from None
        if check and path.name.lower().endswith((".nii", ".nii.gz")):
            _check_nifti_finite(path)
    return validate_image(image, path.name) if check else image


def _check_nifti_finite(path: Path) -> None:
    """ITK's NIfTI reader silently turns NaN and Inf voxels into 0, so a damaged float volume
    would be segmented as if it were fine; look at the stored values with nibabel instead."""
    import nibabel

    try:
        stored = nibabel.load(str(path))
        if not np.issubdtype(stored.get_data_dtype(), np.floating):
            return
        voxels = np.asanyarray(stored.dataobj)
    except Exception:  # ITK read it; a nibabel quirk must not block a readable file
        return
    bad = int(np.count_nonzero(~np.isfinite(voxels)))
    if bad:
        raise SegResMambaError(non_finite_message(path.name, bad))


def _largest_series(folder: Path) -> tuple[str, list[str], dict[str, list[str]]]:
    """(series id, its files, every series) of the DICOM series with the most files in
    ``folder``; SegResMambaError when the folder holds none."""
    try:
        series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    except RuntimeError:
        series_ids = ()
    series = {
        sid: sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid) for sid in series_ids
    }
    series = {sid: list(files) for sid, files in series.items() if files}
    if not series:
        content = "is empty" if not any(folder.iterdir()) else "holds no DICOM series"
        raise SegResMambaError(
            f"input folder {folder} {content}; give a DICOM series folder or an image file "
            "(.nii.gz, .nrrd, .mha)"
        )
    chosen = max(series, key=lambda sid: len(series[sid]))
    return chosen, series[chosen], series


def series_description(folder: str | os.PathLike) -> str:
    """The Series Description (0008,103E) of the series :func:`read_dicom_series` reads from
    ``folder`` ("" when there is none), e.g. "AX T1 POST GD": what names the image to a user."""
    try:
        _sid, files, _all = _largest_series(Path(folder))
        reader = sitk.ImageFileReader()
        reader.SetFileName(files[0])
        reader.ReadImageInformation()
    except (SegResMambaError, RuntimeError, OSError):
        return ""
    key = "0008|103e"
    return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""


def dicom_series_files(folder: str | os.PathLike) -> list[str]:
    """The files of the DICOM series with the most files in ``folder`` (not its subfolders),
    sorted along the slice axis as the volume's slices are.

    Folders often hold a localizer or a second reconstruction beside the main series; the
    largest one is the volume a user means. The others are named in a log note. Writers that
    reference the source (DICOM SEG) use this same list, so they see the series that was read.
    """
    folder = Path(folder)
    chosen, files, series = _largest_series(folder)
    if len(series) > 1:
        others = ", ".join(f"{sid} ({len(f)} files)" for sid, f in series.items() if sid != chosen)
        _log.info(
            "%s holds %d DICOM series; reading %s (%d files), not %s",
            folder,
            len(series),
            chosen,
            len(files),
            others,
        )
    return list(files)


def read_dicom_series(folder: str | os.PathLike) -> sitk.Image:
    """Read the DICOM series with the most files in ``folder`` (see :func:`dicom_series_files`)."""
    files = dicom_series_files(folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        return reader.Execute()
    except RuntimeError:
        raise SegResMambaError(
            f"cannot read the DICOM series in {folder}: damaged or unsupported files"
        ) from None

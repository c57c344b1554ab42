"""Reading scans with their geometry: NIfTI, NRRD, MHA files and DICOM series folders."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import SegResMambaError
from .checks import non_finite_message, validate_image
from .dicom_series import itk_warnings_silenced, regular_grid, slice_layout, spacing_problem
from .integrity import check_complete

__all__ = ["dicom_series_files", "read_dicom_series", "read_image", "series_description"]

_log = logging.getLogger("segresmamba.io")


def read_image(
    path: str | os.PathLike, check: bool = True, resample_gaps: bool = False
) -> sitk.Image:
    """Read a 3D scan from a file or a DICOM series folder, keeping size, spacing, origin and
    direction exactly as stored (all downstream geometry is derived from them).

    With ``check`` (default) the image also passes :func:`validate_image`: unreadable files,
    2D, 4D or vector images, NaN/Inf voxels and constant images raise a one-line
    SegResMambaError instead of failing deep inside the pipeline. A DICOM series whose slices
    are not evenly spaced is refused, or with ``resample_gaps`` read onto a regular grid.
    """
    path = Path(path)
    if path.is_dir():
        image = read_dicom_series(path, resample_gaps)
    elif not path.exists():
        raise SegResMambaError(f"input {path} does not exist")
    else:
        check_complete(path)  # ITK reads a truncated .nii.gz as its first slices and zeros
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
    ``folder`` and its subfolders; SegResMambaError when they hold none."""
    if not folder.is_dir():
        raise SegResMambaError(f"input folder {folder} does not exist")
    series_ids: set[str] = set()
    with itk_warnings_silenced():  # GDCM warns about every non-DICOM file it meets
        for place, _dirs, names in sorted(os.walk(folder)):
            if names:
                try:
                    series_ids.update(sitk.ImageSeriesReader.GetGDCMSeriesIDs(place))
                except RuntimeError:
                    pass
        series = {
            sid: list(
                sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid, recursive=True)
            )
            for sid in sorted(series_ids)
        }
    series = {sid: files for sid, files in series.items() if files}
    if not series:
        content = "is empty" if not any(folder.iterdir()) else "holds no DICOM series"
        raise SegResMambaError(
            f"input folder {folder} {content} (subfolders included); give a DICOM series folder "
            "or an image file (.nii.gz, .nrrd, .mha)"
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
        with itk_warnings_silenced():
            reader.ReadImageInformation()
    except (SegResMambaError, RuntimeError, OSError):
        return ""
    key = "0008|103e"
    return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""


def dicom_series_files(folder: str | os.PathLike) -> list[str]:
    """The files of the DICOM series with the most files in ``folder`` and its subfolders,
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


def read_dicom_series(folder: str | os.PathLike, resample_gaps: bool = False) -> sitk.Image:
    """Read the DICOM series with the most files in ``folder`` (see :func:`dicom_series_files`).

    Slices that are not evenly spaced (a missing slice) are refused, naming the gap; with
    ``resample_gaps`` they are interpolated onto a regular grid instead, with a warning.
    """
    files = dicom_series_files(folder)
    layout = slice_layout(files)
    problem = spacing_problem(layout, Path(folder).name)
    if problem and np.any(np.diff(layout.distances) <= layout.tolerance):
        raise SegResMambaError(
            f"{problem}; slices repeat or are out of order, which resampling cannot mend: "
            "re-export the series"
        )
    if problem and not resample_gaps:
        raise SegResMambaError(
            f"{problem}; re-export the complete series, or add --resample-gaps to read it onto "
            f"a regular {layout.spacing:.2f} mm grid"
        )
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        with itk_warnings_silenced():  # ITK's "Non uniform sampling" warning: said above
            image = reader.Execute()
    except RuntimeError:
        raise SegResMambaError(
            f"cannot read the DICOM series in {folder}: damaged or unsupported files"
        ) from None
    if not problem:
        return image
    image = regular_grid(image, layout)
    _log.warning(
        "%s; read onto a regular grid of %d slices %.2f mm apart (interpolated)",
        problem,
        image.GetSize()[2],
        layout.spacing,
    )
    return image

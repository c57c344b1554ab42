"""DICOM Segmentation output (``.dcm``): a result that goes back into PACS beside its CT or MR.

One segment per task label, with the same name, colour and terminology codes as the ``.seg.nrrd``
output (category, type and laterality modifier from ``tasks.json``). The frames reference the
source series' instances, so a DICOM SEG needs a DICOM series input: the SOP instances it was
derived from are what a PACS viewer uses to put it on the right images. Empty segments are
omitted (a note names them); a result with no structure at all is written as a SEG holding the
task's first segment, empty, and says so in its content description. Written with highdicom,
atomically.

The series is checked before the model loads: its slices must be evenly spaced (the SEG's
frames are its slices) and its headers must hold what a SEG copies from them (frame of
reference, patient and study identity, one study).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import SegResMambaError
from .atomic import atomic_output
from .dicom_packages import require_dicom_seg_packages
from .dicom_series import slice_layout, spacing_problem
from .reader import dicom_series_files
from .seg_nrrd import Segment
from .writers import segments_for

__all__ = ["DICOM_SEG_SUFFIX", "check_dicom_seg_input", "check_dicom_seg_source", "write_dicom_seg"]

DICOM_SEG_SUFFIX = ".dcm"
POSITION_TOLERANCE_MM = 0.01
# Copied by highdicom from the first source instance into the SEG (type 2: present, may be empty)
COPIED_ATTRIBUTES = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
)
_OTHER_FORMATS = "write .seg.nrrd or .nii.gz instead"

_log = logging.getLogger("segresmamba.io")


def check_dicom_seg_input(source: str | os.PathLike) -> None:
    """Fail early (when the cases are planned) when ``source`` is not a DICOM series folder, or
    this Python lacks the packages that write a DICOM SEG."""
    require_dicom_seg_packages()
    source = Path(source)
    if not source.is_dir():
        raise SegResMambaError(
            f"DICOM SEG output needs a DICOM series folder as the (first) input, got {source.name}; "
            "write .seg.nrrd or .nii.gz for other inputs"
        )


def check_dicom_seg_source(source: str | os.PathLike) -> None:
    """Fail before the case's inference when the series in ``source`` cannot be referenced by
    a DICOM SEG: not a DICOM series, slices not evenly spaced, or headers a SEG cannot be made
    from (no frame of reference, patient or study attributes absent, several studies)."""
    import pydicom

    check_dicom_seg_input(source)
    source = Path(source)
    files = dicom_series_files(source)
    problem = spacing_problem(slice_layout(files), source.name)
    if problem:
        raise SegResMambaError(
            f"{problem}; a DICOM SEG needs the series' own evenly spaced slices: re-export the "
            f"complete series, or {_OTHER_FORMATS} (with --resample-gaps)"
        )
    try:
        datasets = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    except (OSError, pydicom.errors.InvalidDicomError) as error:
        raise SegResMambaError(f"cannot read the DICOM series in {source}: {error}") from None
    _check_headers(datasets, source)


def _check_headers(datasets: list, source: Path) -> None:
    """What highdicom copies from the source must be there, and be one thing."""
    name = f"the DICOM series in {source.name}"
    missing = [key for key in ("FrameOfReferenceUID", *COPIED_ATTRIBUTES) if key not in datasets[0]]
    if "FrameOfReferenceUID" in missing:
        raise SegResMambaError(
            f"{name} has no FrameOfReferenceUID (0020,0052), so a DICOM SEG cannot be placed on "
            f"it; {_OTHER_FORMATS}"
        )
    if missing:
        raise SegResMambaError(
            f"{name} lacks {', '.join(missing)}, which a DICOM SEG copies from it (they may be "
            f"empty, not absent); add them to the series or {_OTHER_FORMATS}"
        )
    for keyword, what in (
        ("FrameOfReferenceUID", "frames of reference"),
        ("StudyInstanceUID", "studies"),
        ("PatientID", "patients"),
    ):
        values = sorted({str(d.get(keyword, "")) for d in datasets} - {""})
        if len(values) > 1:
            raise SegResMambaError(
                f"{name} is one series split across {len(values)} {what} ({keyword} "
                f"{', '.join(values)}); a DICOM SEG references one: fix the headers or "
                f"{_OTHER_FORMATS}"
            )


def _source_datasets(files: Sequence[str], labelmap: sitk.Image) -> list:
    """The series' headers (no pixels) in the volume's slice order, checked against its grid."""
    import pydicom

    datasets = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    width, height, depth = labelmap.GetSize()
    if len(datasets) != depth:
        raise SegResMambaError(
            f"the DICOM series has {len(datasets)} files but the result has {depth} slices"
        )
    for index, dataset in enumerate(datasets):
        if (int(dataset.Rows), int(dataset.Columns)) != (height, width):
            raise SegResMambaError(
                f"{Path(files[index]).name}: {dataset.Rows}x{dataset.Columns} pixels, the result "
                f"has {height}x{width}"
            )
        expected = labelmap.TransformIndexToPhysicalPoint((0, 0, index))
        stored = [float(v) for v in dataset.ImagePositionPatient]
        if np.abs(np.subtract(stored, expected)).max() > POSITION_TOLERANCE_MM:
            raise SegResMambaError(
                f"{Path(files[index]).name} lies at {stored}, not at slice {index} of the result; "
                "the result is not on the source series' grid"
            )
    _complete_identity(datasets, files)
    return datasets


def _complete_identity(datasets: list, files: Sequence[str]) -> None:
    """Fill identifiers that de-identification blanked, in memory only (sources are not touched).

    Each instance's class and UID come back from its file meta header, which names the same
    instance. A blank study or series UID gets one made from the files (the same on every run),
    with a note: such a SEG still opens on this series, but PACS will not file it with the study.
    """
    from pydicom.uid import generate_uid

    made_up = []
    for dataset in datasets:
        meta = getattr(dataset, "file_meta", None)
        if not dataset.get("SOPClassUID") and meta is not None:
            dataset.SOPClassUID = meta.MediaStorageSOPClassUID
        if not dataset.get("SOPInstanceUID") and meta is not None:
            dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
        if all(d.get(keyword) for d in datasets):
            continue
        uid = generate_uid(entropy_srcs=[keyword, *(str(d.SOPInstanceUID) for d in datasets)])
        for dataset in datasets:
            setattr(dataset, keyword, uid)
        made_up.append(keyword)
    if made_up:
        _log.info(
            "the source series has no %s (de-identified?); the DICOM SEG uses one derived from "
            "its instances",
            " or ".join(made_up),
        )


def _description(number: int, segment: Segment, task):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from .. import __version__

    terminology = segment.codes
    if terminology is None:
        raise SegResMambaError(f"segment {segment.name} has no terminology codes")

    def coded(code) -> hd.sr.CodedConcept:
        return hd.sr.CodedConcept(code.value, code.scheme, code.meaning)

    description = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=segment.name[:64],
        segmented_property_category=coded(terminology.category),
        segmented_property_type=coded(terminology.type),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="SegResMamba",
            version=f"{__version__} ({task.name})",
            family=codes.cid7162.ArtificialIntelligence,
        ),
        display_color=hd.color.CIELabColor.from_rgb(
            *(round(255 * min(1.0, max(0.0, c))) for c in segment.color)
        ),
    )
    if terminology.modifier is not None:  # e.g. laterality: "Kidney" + "Right", nested in the type
        property_type = description.SegmentedPropertyTypeCodeSequence[0]
        property_type.SegmentedPropertyTypeModifierCodeSequence = [coded(terminology.modifier)]
    return description


def write_dicom_seg(
    labelmap: sitk.Image,
    path: str | os.PathLike,
    task,
    source: str | os.PathLike,
    overwrite: bool = False,
    convention: str = "2023",
) -> Path:
    """Write ``labelmap`` (on the grid of the DICOM series in folder ``source``) as a DICOM SEG.

    ``labelmap`` is what :func:`segresmamba.io.write_labelmap` takes: a uint8 labelmap or, for
    sigmoid tasks, the multi-component region masks (then the segments may overlap).
    """
    path = Path(path)
    check_dicom_seg_source(source)
    datasets = _source_datasets(dicom_series_files(source), labelmap)
    voxels = sitk.GetArrayFromImage(labelmap)  # (slice, row, column[, layer])
    if voxels.ndim == 3:
        voxels = voxels[..., None]
    kept, masks, empty = [], [], []
    for segment in segments_for(task, labelmap, convention):
        mask = voxels[..., segment.layer] == segment.label_value
        if mask.any():
            kept.append(segment)
            masks.append(mask)
        else:
            empty.append(segment.name)
    found = "automatic segmentation"
    if not kept:  # a SEG needs a segment: the first one, empty, and the description says so
        first = segments_for(task, labelmap, convention)[0]
        kept, masks = [first], [np.zeros(voxels.shape[:3], bool)]
        found = "nothing found"
        _log.warning(
            "DICOM SEG %s: the result is empty (no %s structure found); written with one empty "
            "segment (%s)",
            path.name,
            task.name,
            first.name,
        )
    elif empty:
        _log.info("DICOM SEG %s: empty segments omitted: %s", path.name, ", ".join(empty))
    try:
        seg = _segmentation(datasets, masks, kept, task, found)
    except (ValueError, AttributeError) as error:  # what the header check above did not foresee
        raise SegResMambaError(
            f"cannot write {path.name}: the DICOM series in {Path(source).name} does not allow a "
            f"DICOM SEG ({' '.join(str(error).split())}); {_OTHER_FORMATS}"
        ) from None
    with atomic_output(path, overwrite) as temporary:
        seg.save_as(str(temporary))
    return path


def _segmentation(datasets: list, masks: list, kept: list, task, found: str):
    import highdicom as hd

    from .. import __version__

    return hd.seg.Segmentation(
        source_images=datasets,
        pixel_array=np.stack(masks, axis=-1).astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[_description(n, s, task) for n, s in enumerate(kept, start=1)],
        series_instance_uid=hd.UID(),
        series_number=int(getattr(datasets[0], "SeriesNumber", 0) or 0) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="SegResMambaSlicer",
        manufacturer_model_name="SegResMamba",
        software_versions=__version__,
        device_serial_number="none",
        series_description=f"SegResMamba {task.name}"[:64],
        content_label="SEGRESMAMBA",
        content_description=f"{found}, task {task.name}"[:64],
        omit_empty_frames=found != "nothing found",  # highdicom keeps every frame then anyway
    )

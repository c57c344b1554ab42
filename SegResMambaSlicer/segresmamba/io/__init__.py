"""Reading scans with their geometry and writing results atomically.

``read_image`` takes NIfTI, NRRD, MHA files and DICOM series folders and rejects images the
network cannot segment with a one-line SegResMambaError. ``write_labelmap`` writes ``.nii.gz``,
``.nrrd`` or Slicer's ``.seg.nrrd`` (names, colours, SNOMED CT terminology) atomically.
"""

from .atomic import atomic_output, check_output_path, full_suffix
from .checks import validate_image
from .modality import guess_modality, modality_warning
from .reader import read_dicom_series, read_image, series_description
from .seg_nrrd import Segment, terminology_entry, write_segmentation
from .writers import IMAGE_SUFFIXES, LABELMAP_SUFFIXES, segments_for, write_image, write_labelmap

__all__ = [
    "IMAGE_SUFFIXES",
    "LABELMAP_SUFFIXES",
    "Segment",
    "atomic_output",
    "check_output_path",
    "full_suffix",
    "guess_modality",
    "modality_warning",
    "read_dicom_series",
    "read_image",
    "segments_for",
    "series_description",
    "terminology_entry",
    "validate_image",
    "write_image",
    "write_labelmap",
    "write_segmentation",
]

"""Training datasets in nnU-Net v2 layout: read (and refused when broken) for training, and
written case by case from a user's corrected segmentations (``segresmamba dataset add``).

The engine owns the folder format because both faces write it (the command line and the Slicer
module's *Add to training set*) and ``training/`` reads it: one reader, one writer.
"""

from .folder import (
    EXIT_DATASET,
    FILE_ENDINGS,
    IGNORE,
    Case,
    DatasetError,
    OwnDataset,
    check_cases,
    count_warning,
    load_dataset,
    read_label,
)
from .labels import LabelSource, SegmentInfo, read_label_source
from .layout import default_dataset_dir, own_task_name
from .writer import AddedCase, CaseExistsError, add_case, case_exists

__all__ = [
    "EXIT_DATASET",
    "FILE_ENDINGS",
    "IGNORE",
    "AddedCase",
    "Case",
    "CaseExistsError",
    "DatasetError",
    "LabelSource",
    "OwnDataset",
    "SegmentInfo",
    "add_case",
    "case_exists",
    "check_cases",
    "count_warning",
    "default_dataset_dir",
    "load_dataset",
    "own_task_name",
    "read_label",
    "read_label_source",
]

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
    load_dataset,
    read_label,
)

__all__ = [
    "EXIT_DATASET",
    "FILE_ENDINGS",
    "IGNORE",
    "Case",
    "DatasetError",
    "OwnDataset",
    "check_cases",
    "load_dataset",
    "read_label",
]

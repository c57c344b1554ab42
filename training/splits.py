"""The fixed training/validation splits, written down once so every run and every report agrees.

- BTCV: the 30 labelled training scans split 24 / 6 with cases 35-40 for validation, the choice
  of MONAI's UNETR and SwinUNETR BTCV tutorials (``dataset_0.json``), which the paper follows.
- BraTS 2021: the 1,251 cases in 5 folds, assigned by a seeded shuffle of the sorted case ids.
- MSD Task09 spleen: the 41 labelled scans split 32 / 9 by a seeded shuffle. The paper's 41 / 20
  used the 20 test scans, whose labels were never published, so no one can repeat it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__all__ = [
    "BRATS_FOLDS",
    "BRATS_FOLD_SEED",
    "BTCV_VALIDATION_CASES",
    "SPLEEN_SPLIT_SEED",
    "SPLEEN_VALIDATION_SHARE",
    "brats_folds",
    "btcv_split",
    "spleen_split",
]

BTCV_VALIDATION_CASES = ("0035", "0036", "0037", "0038", "0039", "0040")
"""BTCV validation scans img0035-img0040 (MONAI UNETR/SwinUNETR tutorial split); 24 train."""

BRATS_FOLDS = 5
BRATS_FOLD_SEED = 20210
"""Seed of the shuffle that deals the sorted BraTS 2021 case ids into 5 folds."""

SPLEEN_SPLIT_SEED = 9
"""Seed of the shuffle that picks the spleen validation scans."""

SPLEEN_VALIDATION_SHARE = 9 / 41
"""9 of the 41 labelled MSD spleen scans validate (fewer scans: the same share, at least 1)."""


def btcv_split(case_ids: Iterable[str]) -> tuple[list[str], list[str]]:
    """(training, validation) BTCV case ids ("0001" ...): validation is cases 35-40."""
    ids = sorted(case_ids)
    return (
        [c for c in ids if c not in BTCV_VALIDATION_CASES],
        [c for c in ids if c in BTCV_VALIDATION_CASES],
    )


def brats_folds(
    case_ids: Iterable[str], folds: int = BRATS_FOLDS, seed: int = BRATS_FOLD_SEED
) -> dict[str, int]:
    """Case id -> fold (0..folds-1): the sorted ids shuffled with ``seed``, dealt in turn.

    Fold sizes differ by at most one (1,251 cases: 251, 250, 250, 250, 250).
    """
    ids = sorted(case_ids)
    order = np.random.default_rng(seed).permutation(len(ids))
    return {ids[index]: position % folds for position, index in enumerate(order)}


def spleen_split(
    case_ids: Iterable[str], seed: int = SPLEEN_SPLIT_SEED
) -> tuple[list[str], list[str]]:
    """(training, validation) spleen case ids: 32 / 9 of the 41 scans by a seeded shuffle."""
    ids = sorted(case_ids)
    count = max(1, round(len(ids) * SPLEEN_VALIDATION_SHARE)) if len(ids) > 1 else 0
    order = np.random.default_rng(seed).permutation(len(ids))
    validation = {ids[i] for i in order[:count]}
    return [c for c in ids if c not in validation], [c for c in ids if c in validation]

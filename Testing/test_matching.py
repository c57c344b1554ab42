"""The one name matcher: real-world file names and DICOM series descriptions -> BraTS sequence."""

from __future__ import annotations

import re

import pytest

from segresmamba.tasks import get_task
from segresmamba.tasks.matching import (
    SEQUENCE_SYNONYMS,
    canonical_sequence,
    name_patterns_for,
    recognise_sequence,
)

NAMES = [
    # BraTS 2018-2020 (Brats18_/BraTS20_ and 2013 cases inside them)
    ("Brats18_2013_2_1_flair.nii.gz", "FLAIR"),
    ("Brats18_2013_2_1_t1.nii.gz", "T1"),
    ("Brats18_2013_2_1_t1ce.nii.gz", "T1Gd"),
    ("Brats18_2013_2_1_t2.nii.gz", "T2"),
    ("BraTS20_Training_001_flair.nii.gz", "FLAIR"),
    ("BraTS20_Training_001_t1ce.nii.gz", "T1Gd"),
    # BraTS 2021
    ("BraTS2021_00000_flair.nii.gz", "FLAIR"),
    ("BraTS2021_00000_t1.nii.gz", "T1"),
    ("BraTS2021_00000_t1ce.nii.gz", "T1Gd"),
    ("BraTS2021_00000_t2.nii.gz", "T2"),
    # BraTS 2023 (and the shared test case)
    ("BraTS-GLI-00001-000-t2f.nii.gz", "FLAIR"),
    ("BraTS-GLI-00001-000-t1n.nii.gz", "T1"),
    ("BraTS-GLI-00001-000-t1c.nii.gz", "T1Gd"),
    ("BraTS-GLI-00001-000-t2w.nii.gz", "T2"),
    ("BraTS-MET-00002-000-t1c.nii.gz", "T1Gd"),
    # BraTS 2015/2017 (VSD) and BraTS-Toolkit outputs
    ("VSD.Brain.XX.O.MR_Flair.54512.mha", "FLAIR"),
    ("VSD.Brain.XX.O.MR_T1c.54515.mha", "T1Gd"),
    ("VSD.Brain.XX.O.MR_T1.54513.mha", "T1"),
    ("VSD.Brain.XX.O.MR_T2.54514.mha", "T2"),
    ("patient01_fla_bet.nii.gz", "FLAIR"),
    ("patient01_t1c_bet.nii.gz", "T1Gd"),
    ("patient01_t1_bet.nii.gz", "T1"),
    ("patient01_t2_bet.nii.gz", "T2"),
    ("hdbet_brats-space/case_fla_hdbet_brats.nii.gz", "FLAIR"),
    # BIDS
    ("sub-01_ses-01_FLAIR.nii.gz", "FLAIR"),
    ("sub-01_ses-01_T1w.nii.gz", "T1"),
    ("sub-01_ses-01_ce-gadolinium_T1w.nii.gz", "T1Gd"),
    ("sub-01_ses-01_T2w.nii.gz", "T2"),
    # scanner series descriptions (as Slicer names DICOM volumes)
    ("AX FLAIR", "FLAIR"),
    ("3: Ax T2 FLAIR", "FLAIR"),
    ("T2_FLAIR_AX", "FLAIR"),
    ("t2_tirm_tra_dark-fluid", "FLAIR"),
    ("Sag 3D FLAIR", "FLAIR"),
    ("T1 pre gd", "T1"),
    ("AX T1 PRE", "T1"),
    ("t1_mprage_sag_p2_iso", "T1"),
    ("T1 native", "T1"),
    ("T1 POST GD FLAIR", "T1Gd"),
    ("AX T1 POST GD", "T1Gd"),
    ("MPRAGE+C", "T1Gd"),
    ("7: SAG MPRAGE+C", "T1Gd"),
    ("AX T1 +C", "T1Gd"),
    ("T1W_3D_TFE+C", "T1Gd"),
    ("t1_fl3d_tra_KM", "T1Gd"),
    ("POST GAD", "T1Gd"),
    ("T1 contrast", "T1Gd"),
    ("AX T2 FSE", "T2"),
    ("t2_tse_tra", "T2"),
    ("T2W_TSE", "T2"),
    # names that identify nothing: the caller must ask
    ("case_0000.nii.gz", None),
    ("image1.nii.gz", None),
    ("DWI b1000", None),
    ("ADC", None),
    ("CT chest", None),
]


@pytest.mark.parametrize(("name", "sequence"), NAMES)
def test_real_world_names(name, sequence):
    assert recognise_sequence(name) == sequence


def test_the_table_is_real_world_sized_and_covers_every_spelling_the_issue_lists():
    assert sum(1 for _n, s in NAMES if s) >= 30
    for sequence, spellings in SEQUENCE_SYNONYMS.items():
        for spelling in spellings:
            if spelling in ("pre", "native", "nativ"):
                name = f"AX {spelling}"
            else:
                name = f"case01_{spelling}.nii.gz"
            assert recognise_sequence(name) == sequence, name


def test_brats_task_matches_through_the_same_matcher():
    brats = get_task("brats")
    files = ["x_fla_bet.nii.gz", "x_t1_bet.nii.gz", "x_t1c_bet.nii.gz", "x_t2_bet.nii.gz"]
    assert list(brats.match_inputs(reversed(files)).values()) == files
    for spec, name in zip(brats.inputs, files):
        assert spec.matches(name) and canonical_sequence(spec.name) == spec.name


def test_name_patterns_for_known_sequences_use_the_synonyms():
    (pattern,) = name_patterns_for("FLAIR")
    for stem in ("case_fla", "case_t2f", "case_t2_flair", "case flair"):
        assert re.search(pattern, stem)
    assert not re.search(pattern, "case_t1c")
    (pattern,) = name_patterns_for("T1Gd")
    assert re.search(pattern, "ax t1 mprage+c") and re.search(pattern, "case_t1ce")
    (pattern,) = name_patterns_for("ADC")  # not a sequence: the channel name as a word
    assert re.search(pattern, "case_adc") and not re.search(pattern, "case_badc")

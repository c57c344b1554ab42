"""No silent guess at which image is which, and a warning for the wrong modality (issue 10).

Real files from ../shared/data: the BraTS 2023 case renamed as other tools name their outputs,
the real abdominal CT; the command runs in a real subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk
from helpers_segment import tiny_checkpoint

from segresmamba.cli_segment import order_inputs, read_batch_list
from segresmamba.errors import InputMatchError, exit_code_for
from segresmamba.io import guess_modality, modality_warning, series_description
from segresmamba.tasks import get_task

SEQUENCES = {"FLAIR": "t2f", "T1": "t1n", "T1Gd": "t1c", "T2": "t2w"}


def run_cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SEGRESMAMBA_HOME": str(cwd / "cache"), "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "segresmamba", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        encoding="utf-8",
        timeout=300,
    )


@pytest.fixture(scope="module")
def renamed(shared_data, tmp_path_factory) -> Path:
    """The real BraTS case cropped (to stay fast) and saved under names that identify nothing
    (``case_000N``, nnU-Net style) and under old BraTS-Toolkit names (``_fla_bet``...)."""
    folder = tmp_path_factory.mktemp("renamed")
    toolkit = {"FLAIR": "fla", "T1": "t1", "T1Gd": "t1c", "T2": "t2"}
    for number, (sequence, suffix) in enumerate(SEQUENCES.items()):
        image = sitk.ReadImage(str(shared_data / "brats-gli-00001" / f"{suffix}.nii.gz"))
        image = sitk.RegionOfInterest(image, (64, 64, 32), (88, 88, 60))
        sitk.WriteImage(image, str(folder / f"case_{number:04d}.nii.gz"))
        sitk.WriteImage(image, str(folder / f"patient01_{toolkit[sequence]}_bet.nii.gz"))
    tiny_checkpoint(folder / "brats.safetensors", "brats")
    tiny_checkpoint(folder / "phantom.safetensors", "phantom")
    return folder


def test_unidentified_names_are_refused_with_the_would_be_assignment(renamed):
    output = renamed / "refused.nii.gz"
    inputs = [f"case_{n:04d}.nii.gz" for n in (2, 0, 1, 3)]
    args = [a for name in inputs for a in ("-i", name)]
    result = run_cli("segment", "-t", "brats", *args, "-o", output, cwd=renamed)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "case_0002.nii.gz" in lines[0] and "Refusing to guess" in lines[0]
    assert (
        "FLAIR=case_0002.nii.gz, T1=case_0000.nii.gz, T1Gd=case_0001.nii.gz, "
        "T2=case_0003.nii.gz" in lines[0]
    )
    assert "--inputs-in-order" in lines[0] and "-i FLAIR=PATH" in lines[0]
    assert not output.exists()


def test_order_inputs_named_in_order_and_recognised(renamed):
    brats = get_task("brats")
    plain = tuple(str(renamed / f"case_{n:04d}.nii.gz") for n in range(4))
    with pytest.raises(InputMatchError) as caught:
        order_inputs(brats, plain)
    assert exit_code_for(caught.value) == 2
    assert order_inputs(brats, plain, in_order=True) == plain
    named = tuple(f"{name}={path}" for name, path in zip(SEQUENCES, plain))
    assert order_inputs(brats, tuple(reversed(named))) == plain
    assert order_inputs(brats, tuple(n.lower() for n in named)) == plain  # t1gd=... also
    with pytest.raises(InputMatchError, match="name every brats input once"):
        order_inputs(brats, (named[0], *plain[1:]))
    toolkit = tuple(str(renamed / f"patient01_{s}_bet.nii.gz") for s in ("t2", "fla", "t1c", "t1"))
    assert [Path(p).name for p in order_inputs(brats, toolkit)] == [
        "patient01_fla_bet.nii.gz",  # FLAIR, where the old matcher put it in T1Gd's place
        "patient01_t1_bet.nii.gz",
        "patient01_t1c_bet.nii.gz",
        "patient01_t2_bet.nii.gz",
    ]


def test_batch_lists_name_inputs_too(renamed, tmp_path):
    listing = tmp_path / "cases.txt"
    names = [f"{n}=case_{i:04d}.nii.gz" for i, n in enumerate(SEQUENCES)]
    listing.write_text(",".join(reversed(names)) + "\n", encoding="utf-8")
    (case,) = read_batch_list(listing)
    assert case[0] == f"T2={tmp_path / 'case_0003.nii.gz'}"
    ordered = order_inputs(get_task("brats"), case)
    assert ordered == tuple(str(tmp_path / f"case_{i:04d}.nii.gz") for i in range(4))


def test_named_inputs_run_end_to_end(renamed):
    output = renamed / "named.nii.gz"
    args = []
    for number, sequence in enumerate(SEQUENCES):
        args += ["-i", f"{sequence}=case_{number:04d}.nii.gz"]
    result = run_cli(
        "segment", "-t", "brats", *args, "-o", output, "--model",
        "brats.safetensors", "--fast", cwd=renamed,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "FLAIR=case_0000.nii.gz, T1=case_0001.nii.gz" in result.stderr
    assert "does not look like" not in result.stderr  # MR for an MR task: no modality warning
    assert sitk.ReadImage(str(output)).GetSize() == (64, 64, 32)


def test_modality_is_told_apart_on_the_real_ct_and_mri(shared_data):
    ct = sitk.ReadImage(str(shared_data / "ct-abdomen" / "example_ct.nii.gz"))
    ct_small = sitk.ReadImage(str(shared_data / "ct-abdomen" / "example_ct_sm.nii.gz"))
    brats, btcv = get_task("brats"), get_task("btcv")
    for image in (ct, ct_small):
        assert guess_modality(image) == "CT"
        assert modality_warning(image, btcv) is None
        warning = modality_warning(image, brats, "example_ct.nii.gz")
        assert warning.startswith("example_ct.nii.gz does not look like MR")
        assert "task brats expects MR" in warning
    for suffix in SEQUENCES.values():
        mri = sitk.ReadImage(str(shared_data / "brats-gli-00001" / f"{suffix}.nii.gz"))
        assert guess_modality(mri) == "MR"
        assert modality_warning(mri, brats) is None
        assert "does not look like CT" in modality_warning(mri, btcv, suffix)
    normalised = sitk.ReadImage(
        str(shared_data / "brats2013-2ch" / "imagesTr" / "BRATS13_001_0000.nii.gz")
    )
    assert guess_modality(normalised) == "MR"  # z-scored MR: slightly negative, never -1000


def test_mri_given_to_a_ct_task_runs_with_a_warning(renamed):
    output = renamed / "mr_as_ct.nii.gz"
    result = run_cli(
        "segment", "-t", "phantom", "-i", "patient01_fla_bet.nii.gz", "-o", output,
        "--model", "phantom.safetensors", "--fast", "--quiet", cwd=renamed,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "does not look like" in line]
    assert len(warnings) == 1, result.stderr
    assert warnings[0].startswith("warning: patient01_fla_bet.nii.gz does not look like CT")
    assert output.is_file()


DESCRIPTIONS = ("T1 POST GD FLAIR", "AX T2 FSE", "AX FLAIR", "T1 pre gd")
DICOM_TAGS = ("0010|0010", "0010|0020", "0020|000d", "0020|0032", "0020|0037", "0008|0060")


def test_dicom_folders_are_recognised_by_series_description(shared_data, tmp_path):
    """Four copies of the first slices of the real DICOM series, in folders whose names say
    nothing, each with its own series UID and a scanner-style Series Description."""
    slices = sorted((shared_data / "ct-abdomen" / "example_ct_dicom").iterdir())[:3]
    folders = []
    for number, description in enumerate(DESCRIPTIONS, start=1):
        folder = tmp_path / f"series_{number}"
        folder.mkdir()
        for index, path in enumerate(slices):
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            original = reader.Execute()
            image = sitk.GetImageFromArray(sitk.GetArrayFromImage(original))
            image.CopyInformation(original)
            for key in DICOM_TAGS:
                if reader.HasMetaDataKey(key):
                    image.SetMetaData(key, reader.GetMetaData(key))
            image.SetMetaData("0008|103e", description)
            image.SetMetaData("0020|000e", f"1.2.826.0.1.3680043.2.1125.{number}")
            image.SetMetaData("0020|0013", str(index + 1))
            writer = sitk.ImageFileWriter()
            writer.KeepOriginalImageUIDOn()
            writer.SetFileName(str(folder / f"{index}.dcm"))
            writer.Execute(image)
        folders.append(str(folder))
    assert [series_description(f) for f in folders] == list(DESCRIPTIONS)
    ordered = order_inputs(get_task("brats"), tuple(folders))
    assert [Path(p).name for p in ordered] == ["series_3", "series_4", "series_1", "series_2"]

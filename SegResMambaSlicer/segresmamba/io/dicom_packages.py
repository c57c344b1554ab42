"""Whether this Python can write DICOM SEG, said before any work is done.

DICOM SEG output is the one feature that needs pydicom 3 and highdicom. A plain ``pip install``
of the engine brings both; Slicer's Python may not: Slicer 5.10 ships pydicom 2.4.4 and no
highdicom, and the Slicer module never replaces Slicer's pydicom. So ``-o result.dcm`` there must
say what is missing, in one line, instead of failing on an import after inference.
"""

from __future__ import annotations

import importlib.metadata
import re

from ..errors import SegResMambaError

__all__ = ["DICOM_SEG_PACKAGES", "dicom_seg_packages_problem", "require_dicom_seg_packages"]

DICOM_SEG_PACKAGES: dict[str, tuple[str, str]] = {
    "pydicom": ("3.0", "4"),
    "highdicom": ("0.25", "0.29"),
}
"""distribution -> (minimum, first version not accepted): ``pyproject.toml``'s ranges (a test
checks them against it and against the module's ``DICOM_SEG_REQUIREMENTS``)."""


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", version.split("+")[0])[:3])


def dicom_seg_packages_problem() -> str | None:
    """What is missing for DICOM SEG output in this Python, in words, or None."""
    problems = []
    for name, (minimum, below) in DICOM_SEG_PACKAGES.items():
        try:
            found = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"no {name}")
            continue
        if not _release(minimum) <= _release(found) < _release(below):
            problems.append(f"{name} {found}")
    if not problems:
        return None
    wanted = " and ".join(f"{n}>={lo},<{hi}" for n, (lo, hi) in DICOM_SEG_PACKAGES.items())
    return (
        f"DICOM SEG output needs {wanted}, and this Python has {' and '.join(problems)} "
        "(Slicer 5.10 ships pydicom 2.4.4 and no highdicom; Slicer 5.12 ships both); write "
        ".seg.nrrd or .nii.gz instead, or install them with pip in a Python of your own"
    )


def require_dicom_seg_packages() -> None:
    """Raise the one-line :class:`SegResMambaError` (exit code 2) when DICOM SEG cannot be written."""
    problem = dicom_seg_packages_problem()
    if problem:
        raise SegResMambaError(problem)

"""Are a DICOM series' slices evenly spaced? A missing slice must not be segmented quietly.

ITK stacks a series' slices at one spacing whatever their stored positions: with a slice
missing, every slice beyond the gap lands off its true place and organ volumes come out wrong
(ITK only prints a raw warning). So the slices' positions (ImagePositionPatient projected on the
slice normal) are checked before any work, and a gap is refused, or, when asked, the slices are
interpolated onto a regular grid in physical space. The 3D Slicer module runs the same check on
the files of volumes loaded from its DICOM database.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

__all__ = [
    "SliceLayout",
    "itk_warnings_silenced",
    "regular_grid",
    "slice_layout",
    "spacing_problem",
]

_POSITION, _ORIENTATION = "0020|0032", "0020|0037"


@contextlib.contextmanager
def itk_warnings_silenced() -> Iterator[None]:
    """ITK's raw warnings off (e.g. "Non uniform sampling or missing slices detected") where
    the engine says the same in its own words."""
    before = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(before)


@dataclass(frozen=True)
class SliceLayout:
    """Where a series' slices lie: ``distances`` in mm along ``normal`` from the first file's
    position, in the files' order; ``spacing`` is the series' usual step between slices."""

    files: tuple[str, ...]
    origin: tuple[float, float, float]
    row: np.ndarray
    column: np.ndarray
    normal: np.ndarray
    distances: np.ndarray
    spacing: float

    @property
    def tolerance(self) -> float:
        """A step may differ from the usual one by 0.1 mm or 10% of it, whichever is smaller."""
        return max(0.001, min(0.1, 0.1 * self.spacing))

    def irregular_steps(self) -> np.ndarray:
        """Indices i where the step from slice i to slice i+1 is not the usual spacing."""
        steps = np.diff(self.distances)
        return np.flatnonzero(np.abs(steps - self.spacing) > self.tolerance)

    def worst_step(self) -> int | None:
        """Index i of the step (slice i to i+1) farthest from the usual spacing, if uneven."""
        bad = self.irregular_steps()
        if not len(bad):
            return None
        steps = np.diff(self.distances)
        return int(bad[np.argmax(np.abs(steps[bad] - self.spacing))])


def _vector(reader: sitk.ImageFileReader, key: str, count: int) -> np.ndarray | None:
    if not reader.HasMetaDataKey(key):
        return None
    try:
        values = [float(v) for v in reader.GetMetaData(key).replace(",", "\\").split("\\")]
    except ValueError:
        return None
    return np.array(values) if len(values) == count else None


def slice_layout(files: Sequence[str | os.PathLike]) -> SliceLayout | None:
    """The slices' positions along the series' normal, read from the headers only; None when
    they cannot be checked (fewer than 3 slices, or positions or orientation missing)."""
    if len(files) < 3:
        return None
    reader = sitk.ImageFileReader()
    positions, orientation = [], None
    with itk_warnings_silenced():
        for file in files:
            reader.SetFileName(str(file))
            try:
                reader.ReadImageInformation()
            except RuntimeError:
                return None
            position = _vector(reader, _POSITION, 3)
            cosines = _vector(reader, _ORIENTATION, 6)
            if position is None or cosines is None:
                return None
            if orientation is not None and np.abs(cosines - orientation).max() > 1e-3:
                return None  # tilted slices: not a stack this check understands
            orientation = cosines if orientation is None else orientation
            positions.append(position)
    row, column = orientation[:3], orientation[3:]
    normal = np.cross(row, column)
    along = np.array(positions) @ normal
    distances = along - along[0]
    if distances[-1] < 0:  # files listed from the far end: measure the other way
        normal, distances = -normal, -distances
    steps = np.diff(distances)
    return SliceLayout(
        tuple(str(f) for f in files),
        tuple(float(v) for v in positions[0]),
        row,
        column,
        normal,
        distances,
        float(np.median(steps)),
    )


def spacing_problem(layout: SliceLayout | None, series: str) -> str | None:
    """One sentence naming the series, the worst uneven step in mm and where it is, or None
    when the slices are evenly spaced (or cannot be checked)."""
    if layout is None:
        return None
    worst = layout.worst_step()
    if worst is None:
        return None
    bad = layout.irregular_steps()
    step = float(layout.distances[worst + 1] - layout.distances[worst])
    first, second = (Path(layout.files[i]).name for i in (worst, worst + 1))
    if step <= layout.tolerance:
        what = f"two slices at the same position ({step:.2f} mm apart)"
    elif step > layout.spacing:
        what = f"a gap of {step:.2f} mm (a missing slice?)"
    else:
        what = f"slices only {step:.2f} mm apart"
    more = f", and {len(bad) - 1} more uneven step(s)" if len(bad) > 1 else ""
    return (
        f"the DICOM series {series} is not evenly spaced: {what} between slices {worst + 1} and "
        f"{worst + 2} of {len(layout.files)} ({first}, {second}; "
        f"{layout.distances[worst]:.1f}-{layout.distances[worst + 1]:.1f} mm from the first "
        f"slice), where the others are {layout.spacing:.2f} mm apart{more}"
    )


def regular_grid(image: sitk.Image, layout: SliceLayout) -> sitk.Image:
    """``image`` (the series as ITK stacked it, slices in ``layout.files`` order) interpolated
    linearly along the normal onto slices exactly ``layout.spacing`` apart, from the first
    slice to the last, placed where the headers say (float32)."""
    stack = sitk.GetArrayFromImage(image).astype(np.float32)  # (slice, row, column)
    distances = layout.distances
    count = int(round(distances[-1] / layout.spacing)) + 1
    targets = np.minimum(np.arange(count) * layout.spacing, distances[-1])
    upper = np.clip(np.searchsorted(distances, targets, side="right"), 1, len(distances) - 1)
    lower = upper - 1
    span = distances[upper] - distances[lower]
    weight = np.where(span > 0, (targets - distances[lower]) / np.where(span > 0, span, 1), 0)
    weight = weight.astype(np.float32)[:, None, None]
    voxels = (1 - weight) * stack[lower] + weight * stack[upper]
    result = sitk.GetImageFromArray(voxels)
    result.SetSpacing((*image.GetSpacing()[:2], layout.spacing))
    result.SetOrigin(layout.origin)
    axes = np.stack([layout.row, layout.column, layout.normal], axis=1)
    result.SetDirection(tuple(float(v) for v in axes.ravel()))
    return result

"""Per-segment numbers a report needs: organ volume in mL, intensity summary, where it lies.

For each segment of a result: the voxel count, the volume in millilitres, the mean, standard
deviation (population, as Slicer's Segment Statistics), 5th and 95th percentiles of the first
input's intensity inside it, and its bounding box in millimetres (patient LPS coordinates of
the outermost voxel centres, as ITK and DICOM give positions). ``--statistics FILE.json`` or
``FILE.csv`` writes them for every case of a run; a file that exists already keeps the rows
of the cases this run did not redo (:func:`merge_statistics`), so a resumed cohort's table
covers the whole cohort.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import SegResMambaError
from .io.atomic import atomic_output, full_suffix
from .io.seg_nrrd import Segment

__all__ = [
    "STATISTICS_SUFFIXES",
    "SegmentStatistics",
    "check_statistics_path",
    "merge_statistics",
    "read_statistics",
    "segment_statistics",
    "write_statistics",
]

STATISTICS_SUFFIXES = (".json", ".csv")
GEOMETRY_TOLERANCE = 1e-4
CSV_COLUMNS = (
    ["case", "segment", "label_value", "voxel_count", "volume_ml", "mean", "std", "p5", "p95"]
    + [f"bbox_min_{a}_mm" for a in "xyz"]
    + [f"bbox_max_{a}_mm" for a in "xyz"]
)


@dataclass
class SegmentStatistics:
    """One row of the table: one segment of one case (intensity fields None when empty)."""

    case: str
    segment: str
    label_value: int
    voxel_count: int
    volume_ml: float
    mean: float | None
    std: float | None
    p5: float | None
    p95: float | None
    bbox_min_mm: tuple[float, float, float] | None
    bbox_max_mm: tuple[float, float, float] | None


def _same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=GEOMETRY_TOLERANCE)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=GEOMETRY_TOLERANCE)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=GEOMETRY_TOLERANCE)
    )


def _bbox_mm(image: sitk.Image, mask: np.ndarray) -> tuple[tuple, tuple]:
    """Min and max LPS coordinates over the centres of the mask's voxels.

    On an oblique grid the corners of the voxel-index box lie outside the segment, so the box
    is taken over the voxels themselves. Position is linear along each x line of the grid, so
    the first and last voxel of every line hold its extremes; only those are transformed.
    """
    lines = mask.any(axis=2)  # mask is (z, y, x); ITK indices are (x, y, z)
    z, y = np.nonzero(lines)
    first = mask.argmax(axis=2)[z, y]
    last = mask.shape[2] - 1 - mask[..., ::-1].argmax(axis=2)[z, y]
    index = np.stack([np.concatenate([first, last]), np.tile(y, 2), np.tile(z, 2)])
    matrix = np.reshape(image.GetDirection(), (3, 3)) * np.asarray(image.GetSpacing())
    points = np.asarray(image.GetOrigin())[:, None] + matrix @ index
    low, high = points.min(axis=1), points.max(axis=1)
    return tuple(round(float(v), 3) for v in low), tuple(round(float(v), 3) for v in high)


def segment_statistics(
    case: str, labelmap: sitk.Image, intensity: sitk.Image, segments: Sequence[Segment]
) -> list[SegmentStatistics]:
    """The statistics of each of ``segments`` (see :func:`segresmamba.io.segments_for`).

    ``intensity`` is the case's first input, on the labelmap's grid (``segment()`` returns its
    result on exactly that grid).
    """
    if not _same_grid(labelmap, intensity):
        raise SegResMambaError(
            f"{case}: the result and the first input are not on one grid; cannot measure"
        )
    labels = sitk.GetArrayViewFromImage(labelmap)
    if labels.ndim == 3:
        labels = labels[..., None]
    values = sitk.GetArrayViewFromImage(intensity).astype(np.float64, copy=False)
    voxel_ml = math.prod(labelmap.GetSpacing()) / 1000.0
    rows = []
    for segment in segments:
        mask = labels[..., segment.layer] == segment.label_value
        count = int(np.count_nonzero(mask))
        row = SegmentStatistics(
            case=case,
            segment=segment.name,
            label_value=segment.label_value,
            voxel_count=count,
            volume_ml=round(count * voxel_ml, 4),
            mean=None,
            std=None,
            p5=None,
            p95=None,
            bbox_min_mm=None,
            bbox_max_mm=None,
        )
        if count:
            inside = values[mask]
            p5, p95 = np.percentile(inside, [5, 95])
            row.mean, row.std = round(float(inside.mean()), 4), round(float(inside.std()), 4)
            row.p5, row.p95 = round(float(p5), 4), round(float(p95), 4)
            row.bbox_min_mm, row.bbox_max_mm = _bbox_mm(labelmap, mask)
        rows.append(row)
    return rows


def _csv_text(rows: Iterable[SegmentStatistics]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        low = row.bbox_min_mm or ("",) * 3
        high = row.bbox_max_mm or ("",) * 3
        fields = [row.mean, row.std, row.p5, row.p95]
        writer.writerow(
            [row.case, row.segment, row.label_value, row.voxel_count, row.volume_ml]
            + ["" if v is None else v for v in fields]
            + list(low)
            + list(high)
        )
    return buffer.getvalue()


def check_statistics_path(path: str | os.PathLike) -> Path:
    """Fail before any work when the statistics file's format is unknown."""
    path = Path(path)
    if full_suffix(path) not in STATISTICS_SUFFIXES:
        raise SegResMambaError(
            f"cannot write statistics to {path.name}: use a .json or .csv file name"
        )
    return path


def write_statistics(
    rows: Sequence[SegmentStatistics], path: str | os.PathLike, overwrite: bool = True
) -> Path:
    """Write the table as JSON (``{"segments": [...]}``, LPS mm) or CSV, atomically."""
    path = check_statistics_path(path)
    if full_suffix(path) == ".csv":
        text = _csv_text(rows)
    else:
        document = {
            "coordinates": "LPS mm, voxel centres",
            "std": "population (ddof=0)",
            "segments": [asdict(row) for row in rows],
        }
        text = json.dumps(document, indent=2) + "\n"
    with atomic_output(path, overwrite) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return path


def _number(text: str, kind=float):
    return None if text == "" else kind(text)


def _rows_from_csv(text: str) -> list[SegmentStatistics]:
    table = csv.DictReader(io.StringIO(text))
    if table.fieldnames != CSV_COLUMNS:
        raise ValueError("not this program's columns")
    rows = []
    for item in table:
        low, high = (
            tuple(_number(item[f"bbox_{end}_{a}_mm"]) for a in "xyz") for end in ("min", "max")
        )
        rows.append(
            SegmentStatistics(
                case=item["case"],
                segment=item["segment"],
                label_value=int(item["label_value"]),
                voxel_count=int(item["voxel_count"]),
                volume_ml=float(item["volume_ml"]),
                **{k: _number(item[k]) for k in ("mean", "std", "p5", "p95")},
                bbox_min_mm=None if None in low else low,
                bbox_max_mm=None if None in high else high,
            )
        )
    return rows


def _rows_from_json(text: str) -> list[SegmentStatistics]:
    rows = []
    for item in json.loads(text)["segments"]:
        for key in ("bbox_min_mm", "bbox_max_mm"):
            item[key] = None if item[key] is None else tuple(item[key])
        rows.append(SegmentStatistics(**item))
    return rows


def read_statistics(path: str | os.PathLike) -> list[SegmentStatistics]:
    """The rows of a statistics file this module wrote; SegResMambaError when it is not one."""
    path = check_statistics_path(path)
    try:
        text = path.read_text(encoding="utf-8")
        parse = _rows_from_csv if full_suffix(path) == ".csv" else _rows_from_json
        return parse(text)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
        raise SegResMambaError(
            f"statistics file {path} exists but is not a statistics table this program wrote; "
            "move it away, or use --overwrite to replace it"
        ) from None


def merge_statistics(
    rows: Sequence[SegmentStatistics], path: str | os.PathLike, overwrite: bool = False
) -> tuple[Path, int]:
    """Write ``rows`` into ``path``, keeping the rows of other cases that it holds already: a
    case's new rows replace its old ones, in place. Returns the path and how many earlier
    cases were kept. An existing file that is not a statistics table is refused, unless
    ``overwrite``, which replaces it."""
    path = Path(path)
    old: list[SegmentStatistics] = []
    if path.exists():
        try:
            old = read_statistics(path)
        except SegResMambaError:
            if not overwrite:
                raise
    fresh: dict[str, list[SegmentStatistics]] = {}
    for row in rows:
        fresh.setdefault(row.case, []).append(row)
    merged: list[SegmentStatistics] = []
    for row in old:
        if row.case not in fresh:
            merged.append(row)
        elif fresh[row.case]:  # the first old row of a redone case takes all its new rows
            merged += fresh[row.case]
            fresh[row.case] = []
    merged += [row for row in rows if fresh[row.case]]
    kept = len({row.case for row in old} - {row.case for row in rows})
    return write_statistics(merged, path), kept

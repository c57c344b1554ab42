"""The full-size CT of the end-to-end benchmark: ``example_ct`` on the grid users' CTs have.

The demo CT is 3 mm; the abdominal CTs clinicians load are about 0.75 x 0.75 x 1.25 mm
(488 x 404 x 269 voxels for this body). Timing the small file alone hides what a real scan costs,
so the bench resamples it (B-spline, int16, the same physical extent) once and keeps it beside
the system's temporary files; it is made, never committed.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["FULL_SIZE_SPACING_MM", "full_size_ct"]

FULL_SIZE_SPACING_MM = (0.75, 0.75, 1.25)


def full_size_ct(
    source: Path, spacing_mm: Sequence[float] = FULL_SIZE_SPACING_MM, folder: Path | None = None
) -> Path:
    """``source`` resampled to ``spacing_mm`` over its own extent; made once, then reused (the
    name carries the source's size and modification time, so an edited source is made again)."""
    import SimpleITK as sitk

    stat = source.stat()
    spacing = tuple(float(s) for s in spacing_mm)
    folder = folder or Path(tempfile.gettempdir()) / "segresmamba-bench"
    tag = "x".join(f"{s:g}" for s in spacing)
    target = (
        folder / f"{source.name.split('.')[0]}-{tag}mm-{stat.st_size}-{int(stat.st_mtime)}.nii.gz"
    )
    if target.exists():
        return target
    image = sitk.ReadImage(str(source))
    size = [
        max(1, round(n * s / t)) for n, s, t in zip(image.GetSize(), image.GetSpacing(), spacing)
    ]
    # Keep the physical extent: the first voxel centre moves by half the change of voxel size.
    shift = [(t - s) / 2 for s, t in zip(image.GetSpacing(), spacing)]
    direction = image.GetDirection()
    origin = [
        o + sum(direction[3 * row + col] * shift[col] for col in range(3))
        for row, o in enumerate(image.GetOrigin())
    ]
    resampled = sitk.Resample(
        image, size, sitk.Transform(), sitk.sitkBSpline, origin, spacing, direction,
        float(sitk.GetArrayViewFromImage(image).min()), sitk.sitkInt16,
    )  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    from ..io.atomic import atomic_output

    with atomic_output(target, overwrite=True) as temporary:
        sitk.WriteImage(resampled, str(temporary), useCompression=True)
    return target

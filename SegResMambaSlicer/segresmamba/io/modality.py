"""Is this a CT or an MR image? A warning when a task is given the other kind.

An MR image fed to a CT task (or a CT to a brain-MR task) runs without complaint and returns
nonsense. CT voxels are Hounsfield units: the air around the body sits near -1000 and soft tissue
within -100...200. MR intensities are arbitrary and essentially never far below zero. The
intensity distribution tells them apart; the CLI prints the warning and the Slicer panel shows
it, but neither refuses, since an unusual scan may still be what the user means.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

__all__ = ["guess_modality", "modality_warning"]

_MAX_SAMPLES = 2_000_000
_AIR_HU = -800.0  # at or below: air, or the -1024 padding outside the field of view
_SOFT_TISSUE_HU = (-200.0, 300.0)


def _sample(image: sitk.Image | np.ndarray) -> np.ndarray:
    """At most ~2 M voxels, evenly strided, so the check takes milliseconds on any scan."""
    if isinstance(image, sitk.Image):
        array = sitk.GetArrayFromImage(image)
    else:
        array = np.asarray(image)
    flat = array.reshape(-1)
    step = max(1, flat.size // _MAX_SAMPLES)
    return flat[::step].astype(np.float32, copy=False)


def guess_modality(image: sitk.Image | np.ndarray) -> str | None:
    """ "CT" (Hounsfield units: some air near -1000 and soft tissue), "MR" (essentially nothing
    below zero) or None when the intensities do not say (e.g. a CT cropped inside the body)."""
    voxels = _sample(image)
    voxels = voxels[np.isfinite(voxels)]
    if voxels.size == 0:
        return None
    air = float(np.mean(voxels <= _AIR_HU))
    soft = float(np.mean((voxels >= _SOFT_TISSUE_HU[0]) & (voxels <= _SOFT_TISSUE_HU[1])))
    if air >= 0.005 and soft >= 0.05:
        return "CT"
    if float(np.percentile(voxels, 0.5)) >= -50.0:
        return "MR"
    return None


def modality_warning(image: sitk.Image | np.ndarray, task, name: str = "the image") -> str | None:
    """A one-line warning when ``image`` looks like the other modality than ``task`` expects
    (``task.modality`` "CT" or "MR"), else None. Never raises for an odd image: it only warns."""
    found = guess_modality(image)
    expected = getattr(task, "modality", None)
    if found is None or expected is None or found == expected:
        return None
    voxels = _sample(image)
    low, high = (float(v) for v in np.percentile(voxels, [0.5, 99.5]))
    if expected == "CT":
        why = (
            f"it has no air near -1000 HU (intensities {low:.0f} to {high:.0f}), as an MR "
            "image or a CT not in Hounsfield units would"
        )
    else:
        why = (
            f"it has air near -1000 and soft tissue within -100...200 (intensities {low:.0f} "
            f"to {high:.0f}), as a CT in Hounsfield units does"
        )
    return (
        f"{name} does not look like {expected}: {why}; task {task.name} expects {expected}, so "
        "the result may be meaningless"
    )

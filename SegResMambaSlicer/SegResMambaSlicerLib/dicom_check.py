"""Warn about volumes loaded from Slicer's DICOM database whose slices are not evenly spaced.

Slicer's DICOM loader warns in the log about a missing slice but loads the series anyway, and
the network would segment it with every slice beyond the gap off its true place. The loader
names the files it read in the volume's ``DICOM.instanceUIDs`` attribute (one SOP Instance UID
per slice, DICOMScalarVolumePlugin); their paths come from the database
(``slicer.dicomDatabase.fileForInstance``), and the engine's own check, the one the command
line runs before inference, judges their positions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

__all__ = ["INSTANCE_UIDS", "dicom_gap_warnings", "dicom_files", "slice_spacing_warning"]

INSTANCE_UIDS = "DICOM.instanceUIDs"

_cache: dict[tuple, str | None] = {}


def _database_lookup() -> Callable[[str], str] | None:
    try:
        import slicer
    except ImportError:
        return None
    database = getattr(slicer, "dicomDatabase", None)
    return database.fileForInstance if database is not None else None


def dicom_files(volume_node, file_for_instance: Callable[[str], str] | None = None) -> list[str]:
    """The files of ``volume_node``'s slices, in its slice order, or [] when it did not come
    from the DICOM database or some file is no longer known to it."""
    uids = (volume_node.GetAttribute(INSTANCE_UIDS) or "").split()
    lookup = file_for_instance or _database_lookup()
    if not uids or lookup is None:
        return []
    files = [lookup(uid) if uid != "Unknown" else "" for uid in uids]
    return files if all(files) else []


def slice_spacing_warning(files: Sequence[str], name: str, volume_node=None) -> str | None:
    """The engine's sentence about uneven slice spacing in ``files`` (named ``name``), or None.

    With ``volume_node``, None also when that volume no longer holds the slices as stored:
    Slicer's acquisition geometry regularization, once hardened, resampled it correctly.
    """
    from segresmamba.io.dicom_series import slice_layout, spacing_problem

    layout = slice_layout(files)
    problem = spacing_problem(layout, name)
    if problem is None:
        return None
    if volume_node is not None and not _stacked_as_stored(volume_node, files, layout.worst_step()):
        return None
    return (
        f"{problem}: Slicer stacked its slices at one spacing, so every slice beyond the gap is "
        "off its true place; re-export the complete series, or load it with the DICOM "
        "module's acquisition geometry regularization and harden that transform"
    )


def _stacked_as_stored(volume_node, files: Sequence[str], gap: int) -> bool:
    """Does the volume hold file k as its slice k (checked just past the gap)? Then nothing
    has corrected the spacing. A non-linear parent transform is the regularization itself,
    which the module asks to harden before segmenting anyway."""
    import numpy as np
    import SimpleITK as sitk

    from .volumes import array_from_volume

    parent = volume_node.GetParentTransformNode()
    if parent is not None and not parent.IsTransformToWorldLinear():
        return False
    try:
        voxels = array_from_volume(volume_node, copy=False)
        stored = sitk.GetArrayFromImage(sitk.ReadImage(str(files[gap + 1])))
    except (ValueError, RuntimeError):
        return False
    stored = (
        stored.reshape(stored.shape[-2:]) if stored.size == np.prod(stored.shape[-2:]) else None
    )
    return (
        voxels.shape[0] == len(files)
        and stored is not None
        and stored.shape == voxels.shape[1:]
        and np.array_equal(stored, voxels[gap + 1])
    )


def dicom_gap_warnings(
    input_nodes: Sequence, file_for_instance: Callable[[str], str] | None = None
) -> list[str]:
    """One warning per selected volume from the DICOM database whose slices are unevenly
    spaced; cached per volume and file list, so the panel may ask on every refresh."""
    warnings = []
    for node in input_nodes:
        if node is None or not node.GetAttribute(INSTANCE_UIDS):
            continue
        files = dicom_files(node, file_for_instance)
        if not files:
            continue
        image = node.GetImageData()
        key = (node.GetID(), tuple(files), image.GetMTime() if image else 0)
        if key not in _cache:
            if len(_cache) > 64:
                _cache.clear()
            try:
                _cache[key] = slice_spacing_warning(files, repr(node.GetName()), node)
            except Exception as error:  # a warning must never break the panel or a run
                logging.getLogger(__name__).debug("no slice spacing check: %s", error)
                _cache[key] = None
        if _cache[key]:
            warnings.append(_cache[key])
    return warnings

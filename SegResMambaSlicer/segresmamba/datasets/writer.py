"""One corrected case becomes a training case: ``segresmamba dataset add`` and the Slicer
module's *Add to training set* both end here, so there is one writer of dataset folders.

The case is written in nnU-Net v2 layout (``imagesTr/ID_0000<ending>`` per channel in the
dataset's channel order, ``labelsTr/ID<ending>`` as uint8) on the first channel's grid, and
``dataset.json`` is created or updated. Everything is checked before anything is written; each
file is then written under a temporary name in a hidden folder of the dataset and renamed into
place, ``dataset.json`` last, so a refusal, an error or a kill never leaves a half-written file.

With ``partial`` ("only the slices I edited are labelled"), the slices of the first channel's
third voxel axis that hold no segment become nnU-Net's ``ignore`` label, so training does not
learn that the slices a user never looked at are background.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from ..errors import SegResMambaError
from ..io.atomic import land
from ..io.reader import read_image
from .folder import DatasetError
from .grid import check_overlap, on_grid
from .labels import LabelSource, labelmap_from_source, read_label_source, safe_name
from .layout import Layout, existing_layout, new_layout, same_channel

__all__ = ["AddedCase", "CaseExistsError", "add_case", "case_exists", "check_image_count"]


@dataclass(frozen=True)
class AddedCase:
    """What was added, for a one-line report: the case, where, which labels it holds (in the
    dataset's order), whether (and on how many slices) ``ignore`` was written, how many cases
    the dataset holds now, and whether an existing case of that id was replaced."""

    case_id: str
    dataset_dir: Path
    label_names: tuple[str, ...]
    ignore_written: bool
    ignored_slices: int
    channel_names: tuple[str, ...]
    cases: int
    replaced: bool


class CaseExistsError(DatasetError):
    """The dataset holds a case of this id already; it is replaced only on request (the CLI's
    ``--replace``; the Slicer module asks the user first)."""


def _check_case_id(case_id: str) -> str:
    if not case_id or safe_name(case_id, "") != case_id:
        raise DatasetError(
            f"case id {case_id!r} cannot name files: use letters, digits, '-', '_' or '.', "
            "not starting or ending with one of the last three"
        )
    return case_id


def case_exists(dataset_dir: str | os.PathLike, case_id: str) -> bool:
    """Whether the dataset holds a case of this id (for a front end that asks before it
    replaces one)."""
    layout = existing_layout(Path(dataset_dir))
    return bool(layout and _case_files(layout, case_id))


def _case_files(layout: Layout, case_id: str) -> list[Path]:
    ending = layout.file_ending
    images = sorted((layout.folder / "imagesTr").glob(f"{case_id}_[0-9][0-9][0-9][0-9]{ending}"))
    label = layout.folder / "labelsTr" / f"{case_id}{ending}"
    return images + ([label] if label.exists() else [])


def check_image_count(layout: Layout | None, task: Any, count: int) -> None:
    """Refuse a case whose number of images is not the task's inputs or the dataset's
    channels (checked before any file is read)."""
    if task is not None and count != task.in_channels:
        names = ", ".join(spec.name for spec in task.inputs)
        raise DatasetError(
            f"task {task.name} takes {task.in_channels} image(s) ({names}); got {count}"
        )
    if layout is not None and count != len(layout.channel_names):
        names = ", ".join(layout.channel_names)
        raise DatasetError(
            f"dataset {layout.folder} has {len(layout.channel_names)} channel(s) ({names}); "
            f"the case has {count} image(s)"
        )


def _ordered(layout: Layout, images: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The images in the dataset's channel order, matched by name (see ``same_channel``)."""
    check_image_count(layout, None, len(images))
    ordered = []
    for channel in layout.channel_names:
        hits = [name for name in images if same_channel(name, channel)]
        if len(hits) != 1:
            raise DatasetError(
                f"the images are named {', '.join(images)}, dataset {layout.folder}'s channels "
                f"{', '.join(layout.channel_names)}: which image is {channel} is not clear"
            )
        ordered.append((channel, images[hits[0]]))
    return ordered


def _read(name: str, image: Any) -> sitk.Image:
    if isinstance(image, sitk.Image):
        return image
    try:
        return read_image(image)
    except DatasetError:
        raise
    except SegResMambaError as error:
        raise DatasetError(f"channel {name}: {' '.join(str(error).split())}") from None


def _case_label(layout: Layout, source: LabelSource, reference: sitk.Image, partial: bool):
    """(label image on the reference grid, labels present, ignored slice count, ignore written)."""
    check_overlap(source.image, reference, f"labels {source.source}", "the first channel")
    on_reference = LabelSource(
        on_grid(source.image, reference, True), source.segments, source.source
    )
    labelmap, labelled, ignored = labelmap_from_source(
        on_reference, layout.targets, layout.ignore, layout.region_based
    )
    if not labelled.any():
        raise DatasetError(
            f"labels {source.source} hold no labelled voxel on the first channel's grid (an "
            "empty segmentation): there is nothing to learn from"
        )
    unlabelled = ~labelled.any(axis=(1, 2)) if partial else np.zeros(len(labelmap), bool)
    if unlabelled.any() or ignored.any():
        value = layout.ignore_value()
        labelmap[unlabelled] = value
        labelmap[ignored] = value
    present = set(np.unique(labelmap).tolist())
    names = tuple(
        t.name
        for t in layout.targets
        if t.value != 0 and present & set(t.value if isinstance(t.value, tuple) else (t.value,))
    )
    image = sitk.GetImageFromArray(labelmap)
    image.CopyInformation(reference)
    written = layout.ignore is not None and layout.ignore in present
    return image, names, int(unlabelled.sum()), written


def add_case(
    dataset_dir: str | os.PathLike,
    case_id: str,
    images: Mapping[str, sitk.Image | str | os.PathLike],
    labels: LabelSource | str | os.PathLike,
    task: Any = None,
    partial: bool = False,
    replace: bool = False,
    name: str | None = None,
) -> AddedCase:
    """Add one case to the nnU-Net v2 dataset in ``dataset_dir`` (created when new).

    ``images`` maps channel names to images or image files; they are put in the dataset's
    channel order by name, and for a new dataset taken in the order given (a task's input
    order when ``task`` is given). ``labels`` is a ``.seg.nrrd`` or plain labelmap file, or a
    LabelSource (the segments of a Slicer scene). ``task`` (a Task) gives a new dataset its
    labels and name; ``name`` names a new dataset (the task name its model will carry).

    Raises DatasetError, with one line and nothing written, for an empty segmentation, images
    or labels that do not overlap, a segment or value that is no label of the dataset, a
    channel count that differs, an unreadable file, and (CaseExistsError) a case id that
    exists when ``replace`` is not set.
    """
    folder = Path(dataset_dir)
    _check_case_id(case_id)
    layout = existing_layout(folder)
    check_image_count(layout, task, len(images))
    existing = _case_files(layout, case_id) if layout else []
    if existing and not replace:
        raise CaseExistsError(
            f"case {case_id} exists already in {folder} ({existing[0].name}); pass --replace "
            "to replace it"
        )
    if layout is not None:
        _ordered(layout, images)  # names that do not fit fail before any file is read
    source = labels if isinstance(labels, LabelSource) else read_label_source(labels)
    if layout is None:
        layout = new_layout(folder, [str(key) for key in images], source, task, name)
    channels = [(channel, _read(channel, image)) for channel, image in _ordered(layout, images)]
    reference = channels[0][1]
    for channel, image in channels[1:]:
        check_overlap(image, reference, f"channel {channel}", f"channel {channels[0][0]}")
    label, present, ignored_slices, ignore_written = _case_label(layout, source, reference, partial)
    resampled = [on_grid(image, reference, False) for _channel, image in channels[1:]]
    count = _write(layout, case_id, [reference, *resampled], label)
    return AddedCase(
        case_id=case_id,
        dataset_dir=folder.resolve(),
        label_names=present,
        ignore_written=ignore_written,
        ignored_slices=ignored_slices,
        channel_names=layout.channel_names,
        cases=count,
        replaced=bool(existing),
    )


def _case_count(layout: Layout, case_id: str) -> int:
    labels = layout.folder / "labelsTr"
    ending = layout.file_ending
    found = (
        {p.name[: -len(ending)] for p in labels.glob(f"*{ending}")} if labels.is_dir() else set()
    )
    return len(found | {case_id})


def _write(layout: Layout, case_id: str, images: list[sitk.Image], label: sitk.Image) -> int:
    """Write every file under a temporary name, then rename them into place, dataset.json last.
    Returns the number of cases the dataset holds."""
    folder, ending = layout.folder, layout.file_ending
    created = not folder.exists()
    landed = False
    try:
        folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=folder))
        try:
            plan = [
                (image, folder / "imagesTr" / f"{case_id}_{c:04d}{ending}")
                for c, image in enumerate(images)
            ]
            plan.append((label, folder / "labelsTr" / f"{case_id}{ending}"))
            staged = []
            for image, final in plan:
                sitk.WriteImage(image, str(staging / final.name), useCompression=True)
                staged.append((staging / final.name, final))
            count = _case_count(layout, case_id)
            layout.data["numTraining"] = count
            (staging / "dataset.json").write_text(
                json.dumps(layout.data, indent=2) + "\n", encoding="utf-8"
            )
            staged.append((staging / "dataset.json", folder / "dataset.json"))
            for sub in ("imagesTr", "labelsTr"):
                (folder / sub).mkdir(exist_ok=True)
            for temporary, final in staged:
                landed = True
                land(temporary, final)
            return count
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except (OSError, RuntimeError) as error:
        if created and not landed:
            shutil.rmtree(folder, ignore_errors=True)
        reason = getattr(error, "strerror", None) or " ".join(str(error).split())
        raise DatasetError(f"cannot write case {case_id} into {folder}: {reason}") from None

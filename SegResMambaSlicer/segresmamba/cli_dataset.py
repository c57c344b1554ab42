"""``segresmamba dataset add``: one corrected case into an nnU-Net v2 training set.

The same engine function as the Slicer module's *Add to training set*
(:func:`segresmamba.datasets.add_case`), so scripts, tests and the module write datasets the
same way. Which file is which channel is decided by the engine's one input matcher
(``cli_segment.order_inputs``): ``-i NAME=FILE`` names it, or the file name tells it (BraTS
sequence spellings), or ``--inputs-in-order`` takes the order given; it never guesses.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_dataset_command", "run_dataset"]

DESCRIPTION = (
    "Add one case (its images and a segmentation you checked or corrected) to an nnU-Net v2 "
    "dataset folder that training.plan, training.train and nnU-Net read. The label goes onto "
    "the first image's grid; other images are resampled to it in physical space. Segments of "
    "a .seg.nrrd are matched to the dataset's labels by name, then by terminology code; a new "
    "dataset takes its labels from the segments (or from --task). Refusals (exit 2, nothing "
    "written): an empty segmentation, images that do not overlap, a segment or value that is "
    "no label of the dataset, a channel count that differs, an existing case id without "
    "--replace, an unreadable file."
)


def add_dataset_command(commands: Any, parents: list, formatter: Any, epilog: str, parser_class):
    """The ``dataset`` command and its ``add`` action, on the main parser's subcommands."""
    dataset = commands.add_parser(
        "dataset",
        parents=parents,
        formatter_class=formatter,
        epilog=epilog,
        help="build a training set from your own corrected cases",
    )
    actions = dataset.add_subparsers(dest="action", metavar="ACTION", parser_class=parser_class)
    actions.required = True
    add = actions.add_parser(
        "add",
        parents=parents,
        formatter_class=formatter,
        epilog=epilog,
        help="add one case to a dataset folder",
        description=DESCRIPTION,
    )
    add.add_argument("dataset", metavar="DATASET", help="dataset folder (created when new)")
    add.add_argument("--case", required=True, metavar="ID", help="case id, e.g. patient017")
    add.add_argument(
        "-i",
        "--input",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="an image of the case (file or DICOM folder); repeat for each channel. NAME is "
        "the channel (e.g. FLAIR=flair.nii.gz); a new dataset without --task needs it",
    )
    add.add_argument(
        "--labels",
        required=True,
        metavar="FILE",
        help="the segmentation: a .seg.nrrd (named segments) or a labelmap (.nii.gz, .nrrd, "
        ".mha) of the dataset's label values",
    )
    add.add_argument(
        "--task",
        metavar="NAME",
        help="the task the case is for: its inputs order the images, and a new dataset takes "
        "its labels (a built-in task's dataset is named NAME-own)",
    )
    add.add_argument(
        "--partial",
        action="store_true",
        help="only the slices I edited are labelled: slices without any segment become the "
        "dataset's 'ignore' label (left out of training's loss and Dice)",
    )
    add.add_argument("--replace", action="store_true", help="replace a case with the same id")
    add.add_argument(
        "--inputs-in-order",
        action="store_true",
        help="take the images in the dataset's (or task's) channel order when their names do "
        "not tell which is which",
    )
    dataset.set_defaults(run=run_dataset)


def _rename(items: list[str], names: tuple[str, ...], where: str) -> list[str]:
    """``NAME=FILE`` with NAME spelled as the channel it means (``t1ce=`` -> ``T1Gd=``), so the
    one matcher reads it; a NAME that is no channel is refused."""
    from .datasets import DatasetError
    from .datasets.layout import same_channel

    out = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or Path(item).exists():
            out.append(item)
            continue
        hits = [channel for channel in names if same_channel(name, channel)]
        if len(hits) != 1:
            raise DatasetError(
                f"-i {item}: {name!r} is not a channel of {where} ({', '.join(names)})"
            )
        out.append(f"{hits[0]}={path}")
    return out


def _channels_task(layout) -> Any:
    """The dataset's channels as a task's inputs, so the one input matcher can order them."""
    from .tasks.matching import name_patterns_for
    from .tasks.types import InputSpec, Task

    inputs = tuple(
        InputSpec(name, f"channel {i}", name_patterns_for(name))
        for i, name in enumerate(layout.channel_names)
    )
    return Task(
        name=f"dataset {layout.folder.name}", title="", description="", modality="",
        inputs=inputs, output="softmax", labels=(), spacing_mm=(1.0, 1.0, 1.0),
        fast_spacing_mm=(1.0, 1.0, 1.0), patch_size=(1, 1, 1), intensity={}, network={},
    )  # fmt: skip


def _new_channels(items: list[str], folder: Path) -> dict[str, str]:
    from .datasets import DatasetError

    named = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or Path(item).exists():
            raise DatasetError(
                f"dataset {folder} is new: name each image's channel, -i NAME={Path(item).name} "
                "(NAME such as CT, FLAIR or T1Gd), or give --task"
            )
        if name.strip() in named:
            raise DatasetError(f"channel {name.strip()} is given twice")
        named[name.strip()] = path
    return named


def named_images(items: list[str], folder: Path, task: Any, in_order: bool) -> dict[str, str]:
    """Channel name -> file, in channel order, for ``add_case``."""
    from .cli_segment import order_inputs
    from .datasets.layout import existing_layout
    from .datasets.writer import check_image_count
    from .errors import SegResMambaError

    if not items:
        raise SegResMambaError("no input: give each image of the case with -i NAME=FILE")
    layout = existing_layout(folder)
    check_image_count(layout, task, len(items))
    if task is None and layout is None:
        return _new_channels(items, folder)
    ordering = task if task is not None else _channels_task(layout)
    names = tuple(spec.name for spec in ordering.inputs)
    where = f"task {task.name}" if task is not None else f"dataset {folder}"
    paths = order_inputs(ordering, tuple(_rename(items, names, where)), in_order)
    return dict(zip(names, paths))


def run_dataset(args: argparse.Namespace) -> int:
    """``dataset add``: 0 on success; a refusal raises (one ``error:`` line, exit 2)."""
    from .datasets import add_case
    from .tasks import get_task

    task = get_task(args.task) if args.task else None
    folder = Path(args.dataset)
    images = named_images(args.input, folder, task, args.inputs_in_order)
    added = add_case(
        folder, args.case, images, args.labels, task=task, partial=args.partial,
        replace=args.replace,
    )  # fmt: skip
    if not args.quiet:
        what = "replaced" if added.replaced else "added"
        ignore = f"; ignore on {added.ignored_slices} unlabelled slice(s)" if args.partial else ""
        print(
            f"{what} case {added.case_id} in {added.dataset_dir}: channels "
            f"{', '.join(added.channel_names)}; labels {', '.join(added.label_names) or 'none'}"
            f"{ignore}; the dataset holds {added.cases} case(s)"
        )
    return 0

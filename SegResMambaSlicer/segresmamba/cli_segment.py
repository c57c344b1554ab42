"""``segresmamba segment`` and ``segresmamba demo``: plan the cases, load the model once, run
``segment()`` with a progress bar, write each result atomically."""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .cohort import launched_by_torchrun, run_cohort, run_in_turn
from .errors import InputMatchError, SegResMambaError
from .io import LABELMAP_SUFFIXES, check_output_path, full_suffix
from .io.dicom_seg import (
    DICOM_SEG_SUFFIX,
    check_dicom_seg_input,
    check_dicom_seg_source,
    write_dicom_seg,
)
from .io.writers import segments_for
from .statistics import (
    check_statistics_path,
    merge_statistics,
    read_statistics,
    segment_statistics,
)

__all__ = [
    "Case",
    "JsonProgress",
    "ProgressBar",
    "order_inputs",
    "plan_cases",
    "read_batch_list",
    "run_demo",
    "run_segment",
    "split_named",
]

_log = logging.getLogger("segresmamba.cli")
OUTPUT_SUFFIXES = (*LABELMAP_SUFFIXES, DICOM_SEG_SUFFIX)


@dataclass(frozen=True)
class Case:
    """One segmentation job: its inputs in the order given and where the result goes."""

    name: str
    inputs: tuple[str, ...]
    output: Path


class ProgressBar:
    """A tqdm bar (percent, elapsed and ETA) fed by ``segment()``'s progress callback; it
    appears with the first report, so a command that fails early prints only its error."""

    def __init__(self, label: str, quiet: bool) -> None:
        self.label, self.quiet, self.bar = label, quiet, None

    def __call__(self, stage: str, fraction: float) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(
                total=100,
                disable=self.quiet,
                file=sys.stderr,
                leave=False,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}",
            )
        self.bar.set_description_str(f"{self.label} {stage}", refresh=False)
        self.bar.update(max(0.0, 100.0 * fraction - self.bar.n))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class JsonProgress:
    """``--progress-json``: one JSON object per line on stderr for a front end that runs the
    command in a subprocess (the Slicer module parses these instead of a redrawn tqdm bar).

    Lines: ``{"event": "progress", "case": ..., "stage": ..., "fraction": 0..1, "elapsed_s": ...}``,
    written on every stage change and at least every whole percent, flushed at once.
    """

    def __init__(self, label: str) -> None:
        self.label, self.started = label, time.perf_counter()
        self.last: tuple[str, float] | None = None

    def __call__(self, stage: str, fraction: float) -> None:
        import json

        fraction = min(1.0, max(0.0, float(fraction)))
        if self.last and self.last[0] == stage and fraction - self.last[1] < 0.01 < 1.0 - fraction:
            return
        self.last = (stage, fraction)
        line = {
            "event": "progress",
            "case": self.label,
            "stage": stage,
            "fraction": round(fraction, 4),
            "elapsed_s": round(time.perf_counter() - self.started, 2),
        }
        print(json.dumps(line), file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


def _case_name(path: str) -> str:
    from .tasks import image_stem

    if "=" in Path(path).name:  # -i FLAIR=case1_flair.nii.gz names the case by its file
        path = path.split("=", 1)[1]
    return image_stem(Path(path.rstrip("/\\"))) or "case"


def read_batch_list(path: str | Path) -> list[tuple[str, ...]]:
    """Cases from a list file: one per line, inputs separated by commas or tabs (each may be
    ``NAME=PATH``, as with -i); blank lines and ``#`` comments skipped; relative paths are
    relative to the list's folder."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise SegResMambaError(f"cannot read the batch list {path}: {error}") from None
    cases = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.replace("\t", ",").split(",") if p.strip()]
        cases.append(tuple(_relative_to(path.parent, p) for p in parts))
    if not cases:
        raise SegResMambaError(f"the batch list {path} holds no cases")
    return cases


def _relative_to(folder: Path, entry: str) -> str:
    """A list entry's path relative to the list's folder, keeping a ``NAME=`` prefix."""
    match = re.match(r"([A-Za-z][A-Za-z0-9_]*=)(.+)", entry)
    prefix, path = match.groups() if match else ("", entry)
    return prefix + (path if Path(path).is_absolute() else str(folder / path))


def plan_cases(args: argparse.Namespace, task) -> list[Case]:
    """Turn -i/--batch/-o into cases, checking counts and outputs before any work starts."""
    n_inputs = task.in_channels
    output = Path(args.output)
    folder_named = str(args.output).endswith(("/", "\\")) or output.is_dir()  # "-o out/"
    if args.batch:
        if args.input:
            raise SegResMambaError("give either -i or --batch, not both")
        groups = read_batch_list(args.batch)
    elif not args.input:
        raise SegResMambaError("no input: give -i IN (or --batch LIST)")
    elif len(args.input) == n_inputs:
        groups = [tuple(args.input)]
    elif n_inputs == 1 and (folder_named or not full_suffix(output)):
        groups = [(path,) for path in args.input]  # a cohort into a folder
    else:
        names = ", ".join(spec.name for spec in task.inputs)
        hint = "; for several cases give -o a folder" if n_inputs == 1 else ""
        raise SegResMambaError(
            f"task {task.name} takes {n_inputs} input image(s) per case ({names}); got "
            f"{len(args.input)}{hint}"
        )
    for group in groups:
        if len(group) != n_inputs:
            raise SegResMambaError(
                f"task {task.name} takes {n_inputs} input(s) per case; a case lists {len(group)}: "
                f"{', '.join(group)}"
            )
    to_folder = len(groups) > 1 or args.batch or folder_named
    if not to_folder:
        if full_suffix(output) not in OUTPUT_SUFFIXES:
            raise SegResMambaError(
                f"cannot write {output.name}: unknown output format; use "
                f"{', '.join(OUTPUT_SUFFIXES)}"
            )
        cases = [Case(_case_name(groups[0][0]), groups[0], output)]
    else:
        if output.exists() and not output.is_dir():
            raise SegResMambaError(f"-o {output} must be a folder for several cases")
        suffix = DICOM_SEG_SUFFIX if args.format == "dicom-seg" else args.format
        cases = [
            Case(_case_name(g[0]), g, output / f"{_case_name(g[0])}_{task.name}{suffix}")
            for g in groups
        ]
        seen: dict[Path, str] = {}
        for case in cases:
            if case.output in seen:
                raise SegResMambaError(
                    f"two cases would both write {case.output.name} ({seen[case.output]} and "
                    f"{case.inputs[0]}); give them distinct file names"
                )
            seen[case.output] = case.inputs[0]
        if not output.is_dir():
            try:
                output.mkdir(parents=False)
            except OSError as error:
                raise SegResMambaError(
                    f"cannot create output folder {output}: {error.strerror}"
                ) from None
    for case in cases:
        check_output_path(case.output, args.overwrite)
        if full_suffix(case.output) == DICOM_SEG_SUFFIX:
            check_dicom_seg_input(case.inputs[0])
    return cases


def split_named(task, text: str) -> tuple[str | None, str]:
    """``"T1Gd=post.nii.gz"`` -> ("T1Gd", "post.nii.gz") when the prefix names an input of
    ``task`` (any case); anything else is a plain path (None, text)."""
    name, sep, path = text.partition("=")
    if sep:
        for spec in task.inputs:
            if spec.name.lower() == name.strip().lower():
                return spec.name, path
    return None, text


def _recognisable_name(path: str) -> str:
    """What names an input to a user: its file name, or for a DICOM folder the folder's name
    and the series description (e.g. "series_3 AX T1 POST GD")."""
    if not Path(path).is_dir():
        return path
    from .io import series_description

    folder = Path(path).resolve().name
    description = series_description(path).replace("/", " ").replace("\\", " ")
    return f"{folder} {description}".strip()


def order_inputs(task, paths: tuple[str, ...], in_order: bool = False) -> tuple[str, ...]:
    """The inputs in channel order: as named (``-i FLAIR=PATH``), recognised by name, or, with
    ``in_order``, as given. Never guesses: names that do not identify every input of a
    multi-input task raise InputMatchError showing the assignment that order would give."""
    named = [split_named(task, path) for path in paths]
    if task.in_channels == 1:
        return tuple(path for _name, path in named)
    given = {name: path for name, path in named if name is not None}
    if given:
        if len(given) != len(named) or len(given) != task.in_channels:
            raise InputMatchError(
                f"name every {task.name} input once ({', '.join(s.name for s in task.inputs)}) "
                f"or none; got {', '.join(paths)}"
            )
        matched = given
    elif in_order:
        matched = {spec.name: path for spec, path in zip(task.inputs, paths)}
    else:
        names = [_recognisable_name(path) for path in paths]
        try:
            found = task.match_inputs(names)
            matched = {spec: paths[names.index(name)] for spec, name in found.items()}
        except SegResMambaError as error:
            would = ", ".join(f"{s.name}={Path(p).name}" for s, p in zip(task.inputs, paths))
            raise InputMatchError(
                f"{error}. Refusing to guess; in the order given they would be {would}: if "
                f"that is right add --inputs-in-order, or name each input (-i "
                f"{task.inputs[0].name}=PATH ...)"
            ) from None
    ordered = tuple(str(matched[spec.name]) for spec in task.inputs)
    _log.info("inputs: %s", ", ".join(f"{n}={Path(matched[n]).name}" for n in matched))
    return ordered


def run_segment(args: argparse.Namespace) -> int:
    """The segment command: returns 0, or the exit code of the worst failed case."""
    task = _task_of(args)
    statistics_path = getattr(args, "statistics", None)
    if statistics_path:
        check_output_path(check_statistics_path(statistics_path), overwrite=True)
        if Path(statistics_path).exists() and not args.overwrite:
            read_statistics(statistics_path)  # rows to merge into: refuse a foreign file now

    def save(rows: list, path: str) -> None:
        _, kept = merge_statistics(rows, path, args.overwrite)
        if not args.quiet:
            earlier = f"; kept the rows of {kept} earlier case(s) it held" if kept else ""
            print(f"statistics: wrote {path} ({len({r.case for r in rows})} case(s){earlier})")

    if launched_by_torchrun():  # a cohort sharded across processes, GPUs and nodes
        return run_cohort(args, task, plan_cases, _segment_case, save)
    return run_in_turn(args, task, plan_cases(args, task), _segment_case, save)


def _task_of(args: argparse.Namespace):
    """``-t NAME`` or ``-t NAME@K``, parsed once here: the task of that version's own header
    (an older version may have other labels), with ``args.model`` set to its file so every
    case, and every rank of a cohort, loads that very checkpoint."""
    from .tasks import get_task
    from .weights import split_version, task_version

    name, version = split_version(args.task)
    if args.model is not None:
        if version is not None:
            raise SegResMambaError(f"give -t {args.task} or --model, not both")
        return get_task(name)
    task, found = task_version(name, version)
    if found is not None:
        args.model = found.path
        _log.info("version %d of task %s", found.version, found.task)
    return task


def _segment_case(args, task, case: Case, model, label: str, statistics: list | None = None):
    """Read (before the model loads, so bad input fails fast), segment, write; returns model.
    With ``statistics`` (a list), the case's per-segment statistics are appended to it."""
    from .io import modality_warning, read_image, write_labelmap

    paths = order_inputs(task, case.inputs, getattr(args, "inputs_in_order", False))
    if full_suffix(case.output) == DICOM_SEG_SUFFIX:
        check_dicom_seg_source(paths[0])  # gaps, headers: before minutes of inference
    gaps = getattr(args, "resample_gaps", False)
    images = [read_image(path, resample_gaps=gaps) for path in paths]
    for path, image in zip(paths, images):
        warning = modality_warning(image, task, Path(path.rstrip("/\\")).name)
        if warning:
            print(f"warning: {warning}", file=sys.stderr, flush=True)
    from .inference import regions_to_labelmap, segment  # MONAI: only once inputs are good

    if model is None:
        from .weights import load_checkpoint, resolve_model

        checkpoint = resolve_model(task, args.model, progress=not args.quiet)
        model, _header = load_checkpoint(checkpoint, task=task)
        _log.info("model %s", checkpoint)
    bar = (
        JsonProgress(label)
        if getattr(args, "progress_json", False)
        else ProgressBar(label, args.quiet)
    )
    try:
        result = segment(
            images,
            task,
            model,
            device=args.device,
            fast=args.fast,
            tta=args.tta,
            overlap=args.overlap,
            sw_batch_size=args.sw_batch_size,
            progress=bar,
            body_crop=getattr(args, "body_crop", True),
        )
    finally:
        bar.close()
    if task.output == "sigmoid" and not args.regions:
        result = regions_to_labelmap(result, task, args.brats_convention)
    if full_suffix(case.output) == DICOM_SEG_SUFFIX:
        write_dicom_seg(result, case.output, task, paths[0], args.overwrite, args.brats_convention)
    else:
        write_labelmap(
            result, case.output, task, overwrite=args.overwrite, convention=args.brats_convention
        )
    if statistics is not None:
        segments = segments_for(task, result, args.brats_convention)
        statistics += segment_statistics(case.name, result, images[0], segments)
    return model


def run_demo(args: argparse.Namespace) -> int:
    """The demo command: segment the phantom, print Dice per label and the time taken."""
    from .demo import run_demo as demo

    bar = ProgressBar("demo", args.quiet)
    try:
        result = demo(
            args.out, device=args.device, fast=args.fast, progress=bar, checkpoint=args.model
        )
    finally:
        bar.close()
    width = max(len(name) for name in result.dice)
    print(f"{'structure':<{width}}  Dice")
    for name, value in result.dice.items():
        print(f"{name:<{width}}  {value:.3f}")
    print(f"{'mean':<{width}}  {result.mean_dice:.3f}")
    print(f"segmented in {result.seconds:.1f} s on {result.device}; files in {Path(args.out)}:")
    for path in result.paths.values():
        print(f"  {path.name}")
    return 0

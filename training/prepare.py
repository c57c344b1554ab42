"""``python -m training.prepare``: a MONAI datalist from a BTCV, BraTS 2021 or MSD spleen download.

Examples::

    python -m training.prepare --task btcv --data ~/data/BTCV --out btcv.json
    python -m training.prepare --task brats --data ~/data/BraTS2021_TrainingData --out brats.json
    python -m training.prepare --task spleen --data ~/data/Task09_Spleen --out spleen.json

Expected layouts: BTCV ``RawData/Training/img/imgXXXX.nii.gz`` and ``label/labelXXXX.nii.gz``
(``--data`` may point at the folder holding RawData, at RawData or at Training); BraTS 2021
``BraTS2021_XXXXX/BraTS2021_XXXXX_{flair,t1,t1ce,t2,seg}.nii.gz``; MSD ``Task09_Spleen/imagesTr``
and ``labelsTr``. Every pair is checked before anything is written: images and labels present,
the same grid (size, spacing, origin, direction; header reads only) and, unless
``--no-label-check``, only the label values the task knows. Problems are printed one per line.

Exit status: 0 written; 1 the data has problems (nothing written); 2 bad arguments or a missing
folder. The splits are in :mod:`training.splits` and ``training/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from segresmamba.tasks import Task, get_task

from .splits import (
    BRATS_FOLD_SEED,
    BRATS_FOLDS,
    BTCV_VALIDATION_CASES,
    SPLEEN_SPLIT_SEED,
    brats_folds,
    btcv_split,
    spleen_split,
)

__all__ = ["Case", "check_case", "find_cases", "main"]

BRATS_SUFFIXES = ("flair", "t1", "t1ce", "t2")
PAPER_COUNTS = {"btcv": 30, "brats": 1251, "spleen": 41}


class UsageError(Exception):
    """Bad arguments or a missing folder: exit status 2."""


@dataclass
class Case:
    """One case: its id, its images in the task's channel order and its label (None: missing)."""

    case: str
    images: list[Path]
    label: Path | None
    problems: list[str] = field(default_factory=list)


def _first_folder(root: Path, candidates: Sequence[str], what: str) -> Path:
    for candidate in candidates:
        if (root / candidate).is_dir():
            return root / candidate
    raise UsageError(f"{root} does not look like {what}: none of {', '.join(candidates)} found")


def _btcv(root: Path) -> list[Case]:
    training = _first_folder(
        root, ("RawData/Training", "Training", "."), "a BTCV download (RawData/Training/img)"
    )
    if not (training / "img").is_dir():
        raise UsageError(f"{root} does not look like a BTCV download: no RawData/Training/img")
    images = {
        m.group(1): p
        for p in (training / "img").glob("img*.nii.gz")
        if (m := re.fullmatch(r"img(\d{4})\.nii\.gz", p.name))
    }
    labels = {
        m.group(1): p
        for p in (training / "label").glob("label*.nii.gz")
        if (m := re.fullmatch(r"label(\d{4})\.nii\.gz", p.name))
    }
    return _pair(images, labels, "img{}.nii.gz", "label/label{}.nii.gz")


def _spleen(root: Path) -> list[Case]:
    task_dir = _first_folder(root, (".", "Task09_Spleen"), "an MSD Task09_Spleen download")
    if not (task_dir / "imagesTr").is_dir():
        raise UsageError(f"{root} does not look like MSD Task09_Spleen: no imagesTr folder")

    def scans(folder: Path) -> dict[str, Path]:  # "._spleen_2.nii.gz" are macOS leftovers
        return {
            m.group(1): p
            for p in folder.glob("spleen_*.nii.gz")
            if (m := re.fullmatch(r"spleen_(\d+)\.nii\.gz", p.name))
        }

    return _pair(
        scans(task_dir / "imagesTr"),
        scans(task_dir / "labelsTr"),
        "imagesTr/spleen_{}.nii.gz",
        "labelsTr/spleen_{}.nii.gz",
    )


def _pair(images: dict, labels: dict, image_name: str, label_name: str) -> list[Case]:
    cases = []
    for case in sorted(set(images) | set(labels)):
        if case not in images:
            cases.append(
                Case(
                    case,
                    [],
                    labels[case],
                    [
                        f"case {case}: label {labels[case].name} "
                        f"has no image ({image_name.format(case)})"
                    ],
                )
            )
        elif case not in labels:
            cases.append(
                Case(
                    case,
                    [images[case]],
                    None,
                    [
                        f"case {case}: image "
                        f"{images[case].name} has no label ({label_name.format(case)})"
                    ],
                )
            )
        else:
            cases.append(Case(case, [images[case]], labels[case]))
    return cases


def _brats(root: Path, task: Task) -> list[Case]:
    folders = sorted(p for p in root.glob("BraTS2021_*") if p.is_dir())
    if not folders:
        raise UsageError(f"{root} holds no BraTS2021_XXXXX case folders")
    cases = []
    for folder in folders:
        files = {s: folder / f"{folder.name}_{s}.nii.gz" for s in (*BRATS_SUFFIXES, "seg")}
        missing = [p.name for p in files.values() if not p.is_file()]
        ordered = task.match_inputs([files[s] for s in BRATS_SUFFIXES])  # registry channel order
        label = files["seg"] if files["seg"].is_file() else None
        problems = [f"case {folder.name}: missing {', '.join(missing)}"] if missing else []
        cases.append(Case(folder.name, [Path(p) for p in ordered.values()], label, problems))
    return cases


def find_cases(task: Task, root: Path) -> list[Case]:
    """The cases of a download folder in the layout of ``task``'s dataset."""
    if not root.is_dir():
        raise UsageError(f"data folder {root} does not exist")
    finder = {"btcv": _btcv, "spleen": _spleen, "brats": lambda r: _brats(r, task)}[task.name]
    cases = finder(root)
    if not cases:
        raise UsageError(f"no {task.name} cases found in {root}")
    return cases


def _header(path: Path) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return reader


def _grid_difference(a: sitk.ImageFileReader, b: sitk.ImageFileReader) -> str | None:
    checks = (
        ("size", a.GetSize(), b.GetSize(), 0.0),
        ("spacing", a.GetSpacing(), b.GetSpacing(), 1e-3),
        ("origin", a.GetOrigin(), b.GetOrigin(), 1e-2),
        ("direction", a.GetDirection(), b.GetDirection(), 1e-4),
    )
    for name, x, y, tolerance in checks:
        if len(x) != len(y) or not np.allclose(x, y, atol=tolerance, rtol=0):
            fmt = lambda v: "(" + ", ".join(f"{c:g}" for c in v) + ")"  # noqa: E731
            return f"{name} {fmt(x)} vs {fmt(y)}"
    return None


def allowed_label_values(task: Task) -> set[int]:
    """Label values a training label may hold (BraTS in its 2021 convention: 0, 1, 2, 4)."""
    if task.labelmap is not None:
        return {0, *task.labelmap.values("2021")}
    return {label.value for label in task.labels}


def check_case(case: Case, task: Task, check_labels: bool = True) -> list[str]:
    """Problems of one case, each a one-line message naming the file."""
    problems = list(case.problems)
    if problems or case.label is None:
        return problems
    try:
        label_header = _header(case.label)
        for image in case.images:
            difference = _grid_difference(_header(image), label_header)
            if difference:
                problems.append(
                    f"case {case.case}: {image.name} and {case.label.name} are on "
                    f"different grids ({difference})"
                )
        if label_header.GetDimension() != 3 or label_header.GetNumberOfComponents() != 1:
            problems.append(
                f"case {case.case}: {case.label.name} is not a 3D one-component labelmap"
            )
        if check_labels and not problems:
            values = np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(case.label))))
            unexpected = sorted(set(int(v) for v in values) - allowed_label_values(task))
            if unexpected or not np.allclose(values, np.round(values)):
                problems.append(
                    f"case {case.case}: {case.label.name} holds unexpected label "
                    f"value(s) {unexpected}; {task.name} labels are "
                    f"{sorted(allowed_label_values(task))}"
                )
    except RuntimeError as error:
        first = str(error).strip().splitlines()[-1] if str(error).strip() else "unreadable"
        problems.append(f"case {case.case}: cannot read a file: {first}")
    return problems


def build_datalist(task: Task, cases: list[Case], fold: int, root: Path) -> dict:
    """The datalist: split, provenance of the split, and the entries (absolute paths)."""

    def entry(case: Case) -> dict:
        images = [str(p.resolve()) for p in case.images]
        return {
            "case": case.case,
            "image": images if len(images) > 1 else images[0],
            "label": str(case.label.resolve()),
        }

    ids = [c.case for c in cases]
    by_id = {c.case: c for c in cases}
    out: dict = {"task": task.name, "dataset": task.dataset, "source": str(root.resolve())}
    if task.name == "btcv":
        train_ids, val_ids = btcv_split(ids)
        out["split"] = (
            f"BTCV {len(train_ids)} training / {len(val_ids)} validation; validation "
            f"img{', img'.join(BTCV_VALIDATION_CASES)} (MONAI UNETR tutorial split)"
        )
    elif task.name == "spleen":
        train_ids, val_ids = spleen_split(ids)
        out["split"] = (
            f"MSD spleen {len(train_ids)} training / {len(val_ids)} validation of "
            f"{len(ids)} labelled scans, seed {SPLEEN_SPLIT_SEED} (the paper's 20 "
            "test scans have no public labels)"
        )
    else:
        folds = brats_folds(ids)
        train_ids = [c for c in ids if folds[c] != fold]
        val_ids = [c for c in ids if folds[c] == fold]
        out["split"] = (
            f"BraTS 2021 {BRATS_FOLDS} folds of {len(ids)} cases, seed "
            f"{BRATS_FOLD_SEED}; this list validates on fold {fold}"
        )
        out["fold"] = fold
        out["cases"] = [{**entry(by_id[c]), "fold": folds[c]} for c in ids]
    out["training"] = [entry(by_id[c]) for c in train_ids]
    out["validation"] = [entry(by_id[c]) for c in val_ids]
    return out


def _prepare(args: argparse.Namespace) -> int:
    task = get_task(args.task)
    root = Path(args.data).expanduser()
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise UsageError(f"{out} exists; add --overwrite to replace it")
    if args.fold is not None and (task.name != "brats" or not 0 <= args.fold < BRATS_FOLDS):
        raise UsageError(f"--fold is for --task brats and must be 0-{BRATS_FOLDS - 1}")
    cases = find_cases(task, root)
    problems = [p for case in cases for p in check_case(case, task, not args.no_label_check)]
    if task.name == "btcv":
        missing = [c for c in BTCV_VALIDATION_CASES if c not in {x.case for x in cases}]
        if missing:
            problems.append(
                f"the fixed BTCV validation cases are incomplete: img{', img'.join(missing)} "
                "missing"
            )
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        print(f"error: {len(problems)} problem(s) in {root}; nothing written", file=sys.stderr)
        return 1
    datalist = build_datalist(task, cases, args.fold or 0, root)
    if len(cases) != PAPER_COUNTS[task.name]:
        print(
            f"note: {len(cases)} {task.name} cases found; the paper used {PAPER_COUNTS[task.name]}",
            file=sys.stderr,
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(datalist, indent=2) + "\n", encoding="utf-8")
    temporary.replace(out)
    print(
        f"wrote {out}: {len(datalist['training'])} training, {len(datalist['validation'])} "
        f"validation ({datalist['split']})"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.prepare",
        description="Write a MONAI datalist (fixed split) for a dataset download, after checking "
        "every image/label pair.",
    )
    parser.add_argument("--task", required=True, choices=("btcv", "brats", "spleen"))
    parser.add_argument("--data", required=True, help="the download folder")
    parser.add_argument("--out", required=True, help="datalist JSON to write")
    parser.add_argument("--fold", type=int, help="BraTS: the validation fold 0-4 (default 0)")
    parser.add_argument(
        "--no-label-check",
        action="store_true",
        help="skip reading label voxels for the value check (headers still checked)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    try:
        return _prepare(args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

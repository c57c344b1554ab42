"""``python -m training.plan DATASET --out plan.json``: fingerprint a dataset and plan its training.

The plan is plain JSON the user can read and edit before training: the fingerprint, the working
and fast spacings, the intensity rule per channel, patch size and network widths fitted to a
memory budget, loss, steps, augmentation and a fixed 5-fold split re-creatable from ``--seed``.
Its ``task`` is the task the trained model will carry (``tasks.json`` shape).

Ideas taken from nnU-Net's planner (our own code): median spacing, the 10th percentile on an
anisotropic axis, a patch shrunk along the axis where it covers most of the scan until the
budget fits, CT clipping to the foreground's 0.5-99.5 percentiles.

Exit status: 0 written; 2 the dataset is refused (one line naming the case and the problem) or
bad arguments; nothing is written then.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segresmamba.datasets import (
    EXIT_DATASET,
    DatasetError,
    OwnDataset,
    check_cases,
    count_warning,
    load_dataset,
)
from segresmamba.errors import SegResMambaError

from .fingerprint import fingerprint
from .own_task import task_dict

__all__ = [
    "FINETUNE_DEFAULTS",
    "build_parser",
    "check_own_name",
    "check_plan_out",
    "dataset_section",
    "estimate_memory_gb",
    "folds_section",
    "main",
    "make_plan",
    "read_plan",
    "warn_count",
    "write_plan",
]

PLAN_FORMAT = "segresmamba-plan"
PLAN_VERSION = 1
FOLDS = 5
DEFAULT_MEMORY_GB = {"cpu": 1.5, "cuda": 20.0}
"""Default budgets. CPU: small, so a 2-core run of ~2,000 steps takes about 30-40 min (64^3
patches, widths 16-128); GPU: what fits beside other jobs on a 24 GB card."""
MAX_WIDTH = {"cpu": 16, "cuda": 32}
"""First-stage width the planner starts from (halved, down to 8, when the budget is tight)."""
DEFAULT_STEPS = {"cpu": 2000, "cuda": 25000}
FINETUNE_DEFAULTS: dict[str, dict[str, Any]] = {
    "cpu": {"steps": 300, "learning_rate": 1e-3, "val_every": 50},
    "cuda": {"steps": 2500, "learning_rate": 1e-3, "val_every": 250},
}
"""The ``finetune`` section (``training.train --init-from``): how long and how fast a model is
taught more cases. CPU: minutes on two cores (the issue's prototype: 300 steps at 1e-3 in 2.7
min, against ~10 min for 1,000 steps from scratch); GPU: a tenth of the from-scratch length.
Plans written before the section existed get these defaults."""
ANISOTROPY_RATIO = 3.0
"""An axis whose spacing is this much coarser than the finest is treated as anisotropic."""
MAX_SCAN_TO_PATCH = 4.5
"""Coarsen the working spacing until the median scan holds at most this many patches."""
COARSEN_FACTORS = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0)
MIN_PATCH, PATCH_MULTIPLE = 64, 32
"""SegResMamba needs every patch side a multiple of 32 and at least 64."""

# Peak training memory (forward + backward + AdamW) of SegResMamba on the CPU, fitted to peak
# RSS measured for one real step (2 channels in, 5 out, float32, torch 2.x): patch 64^3 width 8
# batch 2: 0.94 GB; 64^3 w16 b2: 1.18 GB; 96^3 w8 b1: 1.19 GB; 64^3 w16 b1: 1.05 GB.
# bytes = batch * voxels * (A * width + B) + C; C covers torch itself (~0.45 GB) and the model.
MEMORY_A = 50.0
MEMORY_B = 600.0
MEMORY_C_GB = 0.55


def estimate_memory_gb(patch: Sequence[int], width: int, batch: int) -> float:
    """Estimated peak memory (GB) of one training step (calibrated formula, see MEMORY_*)."""
    voxels = float(np.prod(patch))
    return batch * voxels * (MEMORY_A * width + MEMORY_B) / 1e9 + MEMORY_C_GB


def _working_spacing(fp: dict[str, Any]) -> tuple[list[float], str]:
    spacings = np.array(fp["spacings_mm"], dtype=float)
    target = np.median(spacings, axis=0)
    coarse = int(np.argmax(target))
    others = [target[a] for a in range(3) if a != coarse]
    if target[coarse] > ANISOTROPY_RATIO * min(others):
        low = float(np.percentile(spacings[:, coarse], 10))
        target[coarse] = max(low, max(others))
        return target.tolist(), f"median, anisotropic axis {coarse}: 10th percentile {low:g} mm"
    return target.tolist(), "median spacing"


def _fit(shape: Sequence[float], budget: float, batch: int, width: int) -> tuple[list[int], int]:
    """Largest patch (multiple of 32, >= 64, no larger than the scan rounded up) and width that
    fit ``budget`` GB: shrink the axis where the patch covers most of the scan, then the width."""
    patch = [max(MIN_PATCH, PATCH_MULTIPLE * math.ceil(s / PATCH_MULTIPLE)) for s in shape]
    while estimate_memory_gb(patch, width, batch) > budget:
        shrinkable = [a for a in range(3) if patch[a] > MIN_PATCH]
        if shrinkable:
            axis = max(shrinkable, key=lambda a: patch[a] / max(shape[a], 1.0))
            patch[axis] -= PATCH_MULTIPLE
        elif width > 8:
            width //= 2
        else:
            break
    return patch, width


def _intensity(fp: dict[str, Any]) -> dict[str, Any]:
    channels = []
    for channel in fp["channels"]:
        if channel["modality"] == "CT":
            channels.append(
                {
                    "name": channel["name"],
                    "kind": "ct",
                    "clip": [channel["percentile_00_5"], channel["percentile_99_5"]],
                    "mean": channel["mean"],
                    "std": max(channel["std"], 1e-3),
                }
            )
        else:
            channels.append({"name": channel["name"], "kind": "zscore_nonzero"})
    return {"kind": "per_channel", "channels": channels}


def folds_section(dataset: OwnDataset, seed: int) -> dict[str, Any]:
    """The plan's fixed split: every case dealt into one of up to 5 folds by a seeded shuffle."""
    from .splits import brats_folds

    ids = [case.case_id for case in dataset.cases]
    count = min(FOLDS, len(ids))
    return {"count": count, "seed": seed, "case_fold": brats_folds(ids, folds=count, seed=seed)}


def dataset_section(dataset: OwnDataset) -> dict[str, Any]:
    """What the plan records of the dataset it was made for."""
    return {
        "name": dataset.name,
        "folder": str(dataset.folder),
        "channels": list(dataset.channel_names),
        "cases": [case.case_id for case in dataset.cases],
        # nnU-Net's 'ignore' label: no class of the task, left out of loss and Dice
        "ignore_value": dataset.ignore_value,
    }


def make_plan(
    dataset: OwnDataset,
    device: str = "cpu",
    memory_gb: float | None = None,
    seed: int = 0,
    steps: int | None = None,
    spacing_mm: float | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """The plan for ``dataset`` (checked cases) on ``device`` within ``memory_gb``."""
    from segresmamba.tasks import task_from_dict

    fp = fingerprint(dataset)
    budget = float(memory_gb or DEFAULT_MEMORY_GB[device])
    batch = 2
    base, why = _working_spacing(fp)
    if spacing_mm:
        base, why, factors = [float(spacing_mm)] * 3, f"--spacing {spacing_mm:g}", (1.0,)
    else:
        factors = COARSEN_FACTORS
    extent = np.array(fp["median_size"], dtype=float) * np.array(fp["median_spacing_mm"])
    for factor in factors:
        spacing = [min(20.0, s * factor) for s in base]
        shape = (extent / np.array(spacing)).tolist()
        patch, width = _fit(shape, budget, batch, MAX_WIDTH[device])
        if np.prod(shape) <= MAX_SCAN_TO_PATCH * np.prod(patch):
            break
    if factor != 1.0:
        why += f", coarsened x{factor:g} so the patch sees enough of the scan within the budget"
    modality = "CT" if any(c["modality"] == "CT" for c in fp["channels"]) else "MR"
    task = task_dict(
        dataset,
        modality,
        spacing,
        spacing,  # fast mode = the trained spacing: a model runs well only where it was taught
        patch,
        _intensity(fp),
        [width * 2**i for i in range(4)],
        name,
    )
    task_from_dict(task, f"the task planned for {dataset.folder}")  # same rules as tasks.json
    check_own_name(task["name"], "--name" if name else f"{dataset.folder}/dataset.json 'name'")
    total = int(steps or DEFAULT_STEPS[device])
    sided = any(w in n.lower() for n in dataset.labels for w in ("left", "right"))
    mr_only = modality == "MR"
    training = {
        "steps": total,
        "learning_rate": 2e-3,
        "weight_decay": 1e-5,
        "loss": "dicece",
        "loss_note": "Dice + cross-entropy (softmax) or Dice + BCE (sigmoid regions)",
        "batch_size": batch,
        "samples_per_volume": 1,
        "crop": "pos_neg",
        "pos": 2,
        "neg": 1,
        "crop_foreground": mr_only,
        "flip_prob": 0.0 if sided else 0.5,
        "rotate90_prob": 0.0,
        "intensity_shift": 0.1,
        "intensity_shift_prob": 0.5,
        "intensity_scale": 0.1,
        "intensity_scale_prob": 0.5,
        "val_every": max(10, total // 10),
    }
    return {
        "format": PLAN_FORMAT,
        "format_version": PLAN_VERSION,
        "dataset": dataset_section(dataset),
        "fingerprint": fp,
        "spacing_rule": why,
        "memory": {
            "device": device,
            "budget_gb": budget,
            "estimate_gb": round(estimate_memory_gb(patch, width, batch), 3),
            "formula": f"batch*voxels*({MEMORY_A:g}*width+{MEMORY_B:g})/1e9 + {MEMORY_C_GB:g}",
        },
        "training": training,
        "finetune": dict(FINETUNE_DEFAULTS[device]),
        "folds": folds_section(dataset, seed),
        "task": task,
    }


def warn_count(dataset: OwnDataset) -> None:
    """Say on stderr when dataset.json's numTraining disagrees with the cases found."""
    line = count_warning(dataset)
    if line:
        print(f"warning: {line}", file=sys.stderr, flush=True)


def check_own_name(name: str, source: str) -> None:
    """Refuse a task name that a built-in task has: the trained model could never be imported
    (``segresmamba models import`` keeps built-in names for the bundled tasks)."""
    from segresmamba.tasks import builtin_tasks

    if name in {task.name for task in builtin_tasks()}:
        raise DatasetError(
            f"task name {name!r} (from {source}) is a built-in task's; give the task a name of "
            "its own with --name"
        )


def check_plan_out(out: str | Path) -> Path:
    """Refuse, before any work, a plan path that cannot be written: a folder, a path under a
    file, or a folder that is not writable. Nothing is created."""
    from segresmamba.io.atomic import check_output_path

    out = Path(out)
    if out.is_dir():
        raise SegResMambaError(f"--out {out} is a folder; give a file name such as plan.json")
    folder = out.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise SegResMambaError(f"cannot write {out}: {folder} is a file, not a folder")
    if folder == out.parent:
        check_output_path(out, overwrite=True)  # probes the folder: root ignores mode bits
    return out


def write_plan(plan: dict[str, Any], out: str | Path) -> Path:
    """Write the plan atomically (never a half-written file, nothing left on failure)."""
    from segresmamba.io.atomic import land, temporary_beside

    try:
        with temporary_beside(out) as temporary:
            temporary.write_text(json.dumps(plan, indent=2) + "\n", encoding="utf-8")
            return land(temporary, out)
    except OSError as error:
        raise SegResMambaError(f"cannot write {out}: {error.strerror or error}") from None


def read_plan(path: str | Path) -> dict[str, Any]:
    """A plan written by :func:`write_plan` (possibly edited by hand); SegResMambaError if not."""
    path = Path(path)
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise SegResMambaError(f"plan {path} cannot be read: {error}") from None
    if not isinstance(plan, dict) or plan.get("format") != PLAN_FORMAT:
        raise SegResMambaError(f"plan {path} is not a training.plan file")
    for key in ("task", "training", "folds", "dataset"):
        if not isinstance(plan.get(key), dict):
            raise SegResMambaError(f"plan {path} has no {key!r} section")
    folds = plan["folds"].get("case_fold")
    if not isinstance(folds, dict) or not all(
        isinstance(f, int) and not isinstance(f, bool) for f in folds.values()
    ):
        raise SegResMambaError(f"plan {path}: 'folds' needs 'case_fold', each case's fold number")
    return plan


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.plan", description=__doc__.split("\n")[0])
    p.add_argument("dataset", help="nnU-Net v2 dataset folder (dataset.json, imagesTr, labelsTr)")
    p.add_argument("--out", required=True, help="plan file to write (JSON)")
    p.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu", help="plan for (default cpu)"
    )
    p.add_argument("--memory-gb", type=float, help="memory budget (default: cpu 1.5, cuda 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the 5-fold split (default 0)")
    p.add_argument("--steps", type=int, help="training steps (default: cpu 2000, cuda 25000)")
    p.add_argument("--spacing", type=float, help="force an isotropic working spacing (mm)")
    p.add_argument("--name", help="task name (default: from dataset.json 'name')")
    return p


def plan_dataset(folder: str | Path, out: str | Path, **options: Any) -> dict[str, Any]:
    """Load, check, fingerprint and plan ``folder``; write and return the plan."""
    check_plan_out(out)
    dataset = load_dataset(folder)
    warn_count(dataset)
    check_cases(dataset)
    plan = make_plan(dataset, **options)
    write_plan(plan, out)
    return plan


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        plan = plan_dataset(
            args.dataset,
            args.out,
            device=args.device,
            memory_gb=args.memory_gb,
            seed=args.seed,
            steps=args.steps,
            spacing_mm=args.spacing,
            name=args.name,
        )
    except SegResMambaError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_DATASET
    task = plan["task"]
    print(
        f"planned {task['name']}: {plan['fingerprint']['cases']} cases, spacing "
        f"{'x'.join(f'{s:g}' for s in task['spacing_mm'])} mm, patch "
        f"{'x'.join(map(str, task['patch_size']))}, widths {task['network']['widths']}, "
        f"~{plan['memory']['estimate_gb']:.2f} GB of {plan['memory']['budget_gb']:g} -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

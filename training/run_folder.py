"""A run folder (``--out``): what a refused run must leave alone, and what a run says it kept.

Every check that can refuse a run (a wrong ``--resume``, other settings, an edited plan) runs
before :func:`open_run` makes the folder and writes the plan, so a refused run never touches an
existing one. A run whose loss becomes NaN stops with :class:`TrainingStopped`, saying what it
kept; nothing is written after the loss broke.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

from segresmamba.errors import SegResMambaError

from .distributed import Distributed
from .state import read_progress

__all__ = [
    "BEST",
    "RESUME",
    "SAME_ON_RESUME",
    "TrainingStopped",
    "check_resume",
    "diverged_message",
    "duration",
    "open_run",
    "plan_digest",
    "refuse_wrong_resume",
]

BEST = "best.safetensors"
RESUME = "resume.safetensors"
SAME_ON_RESUME = (
    "task",
    "data",
    "fold",
    "seed",
    "lr",
    "loss",
    "batch_size",
    "patch_size",
    "samples_per_volume",
    "network",
    "model",
    "total_steps",
    "world_size",
    "ignore_value",
    "init_from",
)


def duration(seconds: float) -> str:
    """``42 s``, ``3.5 min`` or ``2.1 h``: never "0.0 min" for a short run."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def plan_digest(plan: dict[str, Any]) -> str:
    """The plan's fingerprint, so a resume can tell that the run's plan.json was edited."""
    return hashlib.sha256(json.dumps(plan, sort_keys=True).encode("utf-8")).hexdigest()


def check_resume(resume_path: Path, settings: dict[str, Any]) -> None:
    """Refuse a resume whose settings (or the run's plan) are not those the state was saved with."""
    try:
        saved = read_progress(resume_path)["progress"]["settings"]
    except (OSError, ValueError) as error:
        raise SegResMambaError(f"cannot resume from {resume_path}: {error}") from None
    if "plan_sha256" in saved and saved["plan_sha256"] != settings.get("plan_sha256"):
        raise SegResMambaError(
            f"the run's plan.json was changed after {resume_path} was saved; --resume continues "
            "with the plan the run was trained with: restore it, or train the edited plan in a "
            "new --out folder"
        )
    changed = [k for k in SAME_ON_RESUME if saved.get(k) != settings.get(k)]
    if changed:
        raise SegResMambaError(
            f"--resume with different settings ({', '.join(changed)}) than {resume_path}; "
            "resume with the original options"
        )


def refuse_wrong_resume(args: argparse.Namespace, out: Path) -> None:
    """A run folder is never touched by a refused run: checked before anything is read."""
    resume_path = out / RESUME
    if args.resume and not resume_path.is_file():
        raise SegResMambaError(f"nothing to resume: {resume_path} does not exist")
    if not args.resume and resume_path.is_file():
        raise SegResMambaError(f"{out} already holds a run; add --resume or choose another --out")


def open_run(out: Path, own: Any, place: Distributed) -> None:
    """Make the run folder and write the plan used, once every check has passed."""
    if place.main:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise SegResMambaError(
                f"cannot make the run folder {out}: {error.strerror or error}"
            ) from None
        if own is not None:
            from .own_data import PLAN_NAME
            from .plan import write_plan

            write_plan(own.plan, out / PLAN_NAME)
            for note in own.notes:  # what --init-from decided, one line each
                print(note, flush=True)
    place.barrier()


class TrainingStopped(SegResMambaError):
    """The loss became NaN or infinite: the run stops, keeping what it saved before."""


def diverged_message(
    out: Path, value: float, progress: dict[str, Any], saved_step: int | None
) -> str:
    """One line: where the loss broke, and what was kept (nothing is saved after it broke)."""
    kept = []
    if progress["best_step"]:
        kept.append(f"{out / BEST} (step {progress['best_step']})")
    if saved_step:
        kept.append(f"the state saved at step {saved_step} ({RESUME})")
    return (
        f"the loss became {value} at step {progress['step'] + 1}: training stopped before that "
        f"step changed the weights; kept: {', '.join(kept) or 'nothing (no save yet)'}; lower "
        "the learning rate (--lr or the plan's) or check the images"
    )

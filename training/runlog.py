"""What a run leaves behind besides weights: a CSV log, TensorBoard events and provenance.

Only rank 0 writes (the other ranks get a :class:`RunLog` with ``enabled=False``). The CSV keeps
full float precision (``repr``), so two runs can be compared number for number, which is how the
exact-resume test checks that a resumed run continues the uninterrupted one.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["RunLog", "command_line", "git_commit", "utc_now", "write_run_info"]

REPO = Path(__file__).resolve().parents[1]


def git_commit() -> str | None:
    """The checkout's commit (with ``+dirty`` when tracked files differ), or None outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=REPO,
            capture_output=True,
            encoding="utf-8",
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            encoding="utf-8",
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    if not commit:
        return None
    return commit + ("+dirty" if dirty else "")


def command_line(module: str, argv: Sequence[str]) -> str:
    """``python -m training.<cmd> ...`` as it can be typed again (torchrun noted if used)."""
    import os

    prefix = f"python -m {module}"
    world = os.environ.get("WORLD_SIZE")
    if world and world != "1":
        prefix = f"torchrun --nproc_per_node {world} -m {module}"
    return " ".join([prefix, shlex.join(list(argv))]).strip()


def write_run_info(out_dir: Path, info: dict[str, Any]) -> Path:
    """``run.json`` (the settings and how the run ended), written beside its final name and
    renamed into place: a run cancelled while writing keeps the previous, complete file."""
    from segresmamba.io.atomic import land, temporary_beside

    path = out_dir / "run.json"
    with temporary_beside(path) as temporary:
        temporary.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        return land(temporary, path)


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


class RunLog:
    """CSV rows (one per step, validation columns filled on validation steps) and TensorBoard."""

    def __init__(
        self, out_dir: Path, columns: Sequence[str], enabled: bool, resume_step: int | None = None
    ) -> None:
        self.enabled = enabled
        self.columns = list(columns)
        self.path = out_dir / "log.csv"
        self._writer = None
        if not enabled:
            return
        rows: list[dict[str, str]] = []
        if resume_step is not None and self.path.is_file():
            # Rows written after the saved state are replayed by the resumed run: drop them.
            with open(self.path, newline="", encoding="utf-8") as file:
                rows = [r for r in csv.DictReader(file) if int(r["step"]) <= resume_step]
        with open(self.path, "w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(rows)
        try:  # the "train" extra; Slicer's Train button runs without it (log.csv only)
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            print_rank0(True, "tensorboard is not installed: no TensorBoard events, log.csv only")
            return
        self._writer = SummaryWriter(log_dir=str(out_dir / "tensorboard"), purge_step=resume_step)

    def row(self, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", newline="", encoding="utf-8") as file:
            csv.DictWriter(file, fieldnames=self.columns).writerow(
                {k: (repr(v) if isinstance(v, float) else v) for k, v in values.items()}
            )

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self._writer is not None:
            for name, value in values.items():
                self._writer.add_scalar(name, value, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()


def print_rank0(enabled: bool, message: str) -> None:
    if enabled:
        print(message, file=sys.stderr, flush=True)

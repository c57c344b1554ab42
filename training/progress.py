"""How a training run shows its progress: a tqdm bar for a person at a terminal, or, with
``--progress-json``, one JSON line per step on stdout for the Slicer module's background job.

The JSON line (contract I4; ``SegResMambaSlicerLib.process.parse_progress`` reads it)::

    {"event": "progress", "stage": "training", "fraction": 0.25, "elapsed_s": 41.3,
     "step": 75, "total_steps": 300, "loss": 0.8123, "dice": 0.71, "dice_on": "validation"}

``dice`` is the mean Dice of the last validation (null before the first one); ``dice_on`` says
what it was measured on: "validation" cases, or "training cases" with ``--fold all``. The
``elapsed_s`` counts training time over resumes too, so ``fraction`` and ``elapsed_s`` give the
ETA. The bar is off then: its carriage-return redraws would only garble the stream.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["StepReport"]


class StepReport:
    """Progress of one run, on the main process only (other ranks report nothing)."""

    def __init__(
        self,
        *,
        json_lines: bool,
        enabled: bool,
        total: int,
        initial: int,
        title: str,
        dice_on: str = "validation",
    ) -> None:
        self.json_lines = json_lines and enabled
        self.enabled = enabled
        self.total = total
        self.dice_on = dice_on
        self.dice: float | None = None
        self._bar = None
        if enabled and not json_lines:
            from tqdm import tqdm  # only for people at a terminal

            self._bar = tqdm(
                total=total,
                initial=initial,
                desc=title,
                unit="step",
                mininterval=5,
                dynamic_ncols=True,
            )

    def validated(self, step: int, dice: dict[str, float], names: Sequence[str]) -> None:
        """Remember the mean Dice for the next lines, and say it in one line of text."""
        mean = dice["mean"]
        self.dice = None if math.isnan(mean) else float(mean)
        on = "" if self.dice_on == "validation" else f" on the {self.dice_on}"
        self.write(
            f"step {step}: validation mean Dice {mean:.4f} ("
            + ", ".join(f"{n} {dice[n]:.3f}" for n in names)
            + f"){on}"
        )

    def step(self, step: int, loss: float, elapsed_s: float, best: float) -> None:
        """After every step: advance the bar, or print the JSON line."""
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{loss:.4f}", best=f"{max(best, 0):.4f}")
        if self.json_lines:
            line: dict[str, Any] = {
                "event": "progress",
                "stage": "training",
                "fraction": step / self.total,
                "elapsed_s": round(float(elapsed_s), 3),
                "step": int(step),
                "total_steps": int(self.total),
                "loss": float(loss) if math.isfinite(loss) else None,
                "dice": self.dice,
                "dice_on": self.dice_on,
            }
            print(json.dumps(line), flush=True)

    def write(self, message: str) -> None:
        """A line of text that does not break the bar (stdout)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(message)
        else:
            print(message, file=sys.stdout, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

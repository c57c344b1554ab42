"""Where a run stands, from the engine's ``--progress-json`` lines: stage, fraction, an ETA.

Split from :mod:`.process` (which re-exports these names) so the child-process code stays short;
stdlib only, like it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

__all__ = ["ProgressState", "ProgressTracker", "format_duration", "parse_progress"]


@dataclass(frozen=True)
class ProgressState:
    """Where a run stands: stage name, overall fraction 0..1 and, once measurable, seconds left."""

    stage: str
    fraction: float
    elapsed_s: float
    eta_s: float | None = None

    def describe(self) -> str:
        """``segmenting 42% - about 1 min 10 s left``: the text under the progress bar."""
        text = f"{self.stage} {100 * self.fraction:.0f}%"
        if self.eta_s is not None and self.fraction < 1.0:
            text += f" - about {format_duration(self.eta_s)} left"
        return text


def format_duration(seconds: float) -> str:
    """``45 s``, ``3 min 5 s``, ``1 h 2 min``: short and without false precision."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s" if minutes < 10 and seconds else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def parse_progress(line: str) -> dict | None:
    """The dict of a ``--progress-json`` line, or None for any other line."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("event") != "progress":
        return None
    try:
        data["fraction"] = min(1.0, max(0.0, float(data.get("fraction", 0.0))))
        data["elapsed_s"] = float(data.get("elapsed_s", 0.0))
    except (TypeError, ValueError):
        return None
    data["stage"] = str(data.get("stage", ""))
    return data


class ProgressTracker:
    """Turns (stage, fraction, elapsed) reports into an ETA.

    The rate is measured from the first report of the main stage ("segmenting") on, so the
    model-loading pause does not distort it, and no ETA is given before 2 % of that stage (a
    guess from one window would mislead more than no number).
    """

    def __init__(self, main_stage: str = "segmenting") -> None:
        self.main_stage = main_stage
        self.anchor: tuple[float, float] | None = None  # (elapsed, fraction) at main-stage start

    def update(self, stage: str, fraction: float, elapsed_s: float) -> ProgressState:
        eta = None
        if stage == self.main_stage and self.anchor is None:
            self.anchor = (elapsed_s, fraction)
        if self.anchor is not None:
            done = fraction - self.anchor[1]
            spent = elapsed_s - self.anchor[0]
            if done >= 0.02 and spent > 0:
                eta = spent / done * (1.0 - fraction)
        return ProgressState(stage, fraction, elapsed_s, eta)

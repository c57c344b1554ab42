"""One timed ``segresmamba segment`` process, and rounds that alternate the compared settings.

On a shared or throttling machine two runs of the same code differ by 10% or more, so a ratio
near a target is only decided by measuring both sides in turns: every round runs each
configuration once, in a fresh process, in an order that rotates from round to round, and the
median of each configuration's rounds is compared. A configuration can run another checkout of
the code (``--baseline REF``), so "twice as fast as commit X" is measured in one run.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Config", "Timing", "alternate", "checkout", "run_once", "summary"]

REPO = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class Config:
    """One compared setting: a label for the table, the ``segment`` arguments, and the folder
    that holds the ``segresmamba`` package to run (None: this checkout)."""

    label: dict[str, str]
    arguments: tuple[str, ...]
    package_root: Path | None = None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "segresmamba", "segment", *self.arguments, "--progress-json"]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.package_root is not None:
            path = env.get("PYTHONPATH", "")
            env["PYTHONPATH"] = str(self.package_root) + (os.pathsep + path if path else "")
        return env


@dataclass
class Timing:
    """What one process cost: wall seconds, its own peak RSS, and the seconds from its start to
    its first progress event (what a user waits before anything moves)."""

    wall_s: float
    peak_rss_gb: float
    first_progress_s: float | None
    extra: dict = field(default_factory=dict)


def run_once(config: Config) -> Timing:
    """Run ``config`` once; a non-zero exit raises with the process's last error line."""
    command = config.command()
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=config.env(),
        encoding="utf-8",
        errors="replace",
    )
    first: list[float] = []
    lines: list[str] = []

    def read() -> None:
        for line in process.stderr:  # type: ignore[union-attr]
            if not first and line.startswith("{") and '"progress"' in line:
                first.append(time.perf_counter() - started)
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    reader.join(timeout=10)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        errors = [line.strip() for line in lines if line.strip() and not line.startswith("{")]
        last = errors[-1] if errors else "no message"
        raise RuntimeError(f"{shlex.join(command)} exited {process.returncode}: {last}")
    return Timing(elapsed, usage.ru_maxrss * 1024 / 2**30, first[0] if first else None)


def alternate(
    configs: Sequence[Config],
    rounds: int,
    warmup: int = 1,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> list[list[Timing]]:
    """Each configuration's timings, one per round. ``warmup`` untimed runs of each come first
    (a checkout's first run compiles its numba kernels into its cache)."""
    for number in range(warmup):
        for config in configs:
            log(f"e2e: warm-up {number + 1}/{warmup}: {_describe(config)}")
            run_once(config)
    timings: list[list[Timing]] = [[] for _ in configs]
    for number in range(rounds):
        shift = number % len(configs)
        order = list(range(len(configs)))[shift:] + list(range(len(configs)))[:shift]
        for index in order:
            log(f"e2e: round {number + 1}/{rounds}: {_describe(configs[index])}")
            timings[index].append(run_once(configs[index]))
    return timings


def _describe(config: Config) -> str:
    return " ".join(f"{key} {value}" for key, value in config.label.items())


def checkout(ref: str, folder: Path) -> Path:
    """The engine as it was at git ``ref`` (the repository's own history), unpacked under
    ``folder``; returns the folder to put on PYTHONPATH. Raises ValueError for an unknown ref."""
    target = folder / f"code-{ref.replace('/', '_')}"
    if not (target / "segresmamba").is_dir():
        listed = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--verify", f"{ref}^{{commit}}"],
            capture_output=True,
            encoding="utf-8",
        )
        if listed.returncode:
            raise ValueError(f"--baseline {ref}: not a commit of {REPO}")
        archive = folder / f"code-{listed.stdout.strip()}.tar"
        with open(archive, "wb") as handle:
            subprocess.run(
                ["git", "-C", str(REPO), "archive", listed.stdout.strip(), "SegResMambaSlicer"],
                stdout=handle,
                check=True,
            )
        unpacked = target.parent / f"{target.name}-unpacked"
        with tarfile.open(archive) as tar:  # our own history: trusted, but filtered where it can
            if hasattr(tarfile, "data_filter"):
                tar.extractall(unpacked, filter="data")
            else:  # Python 3.10 before 3.10.12
                tar.extractall(unpacked)
        (unpacked / "SegResMambaSlicer").rename(target)
        unpacked.rmdir()
        archive.unlink()
    return target


def summary(timings: Sequence[Timing]) -> dict:
    """Median and every value of each figure over the rounds; the largest peak RSS."""
    import statistics

    walls = [t.wall_s for t in timings]
    firsts = [t.first_progress_s for t in timings if t.first_progress_s is not None]
    return {
        "wall_s_median": statistics.median(walls),
        "wall_s_all": [round(w, 2) for w in walls],
        "first_progress_s_median": statistics.median(firsts) if firsts else None,
        "first_progress_s_all": [round(f, 2) for f in firsts],
        "peak_rss_gb": max(t.peak_rss_gb for t in timings),
    }

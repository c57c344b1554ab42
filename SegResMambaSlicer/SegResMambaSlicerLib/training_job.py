"""Teach a task's model from the Slicer module: training in a child process, then its import.

Training takes minutes to hours on a CPU, so, like inference (:mod:`.process`), it runs as
``PythonSlicer -m training.train ... --progress-json`` in its own process group that the UI polls
and can kill. When it ends well, a second child, ``PythonSlicer -m segresmamba models import``,
registers the run's best checkpoint as the task's next version. Around that:

- one training job at a time on this computer: a lock file in ``user_runs_dir()`` that another
  Slicer sees too (:mod:`.training_runs`), taken over when the process holding it is gone;
- each run keeps its folder, ``user_runs_dir()/<task>/<run>``, with ``slicer-job.json`` saying
  how it was started, so *Resume* continues it with the same options after a cancel, a closed
  scene or a crash;
- a kill never leaves a half-written model: training writes its checkpoints atomically, and a
  temporary file a killed writer left behind is removed here.

Nothing here imports Qt or Slicer: it is tested with plain pytest and real training runs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .process import EngineProcess, Event, ProgressState, format_duration, imported_version
from .training_runs import (
    RunRecord,
    TrainingLock,
    new_run,
    remove_temporary_files,
    write_run,
)

__all__ = [
    "SAVE_EVERY",
    "TrainingJob",
    "TrainingProgress",
    "import_command",
    "training_command",
    "training_progress",
]

SAVE_EVERY = 10
"""Steps between resume states: a cancel loses at most this many steps (about 10 s of CPU
training for a small model), and writing the state (tens of MB) stays a small share of the run."""

BEST = "best.safetensors"


@dataclass(frozen=True)
class TrainingProgress(ProgressState):
    """Where a training run stands: step, loss and the last Dice, with the ETA of the run."""

    step: int = 0
    total_steps: int = 0
    loss: float | None = None
    dice: float | None = None
    dice_on: str = ""

    def describe(self) -> str:
        """``step 120 of 300 - loss 0.412 - Dice 0.78 (validation) - about 3 min left``."""
        parts = [f"step {self.step} of {self.total_steps}"]
        if self.loss is not None:
            parts.append(f"loss {self.loss:.3f}")
        if self.dice is not None:
            parts.append(f"Dice {self.dice:.2f} ({self.dice_on or 'validation'})")
        else:
            parts.append("Dice not measured yet")
        if self.eta_s is not None and self.step < self.total_steps:
            parts.append(f"about {format_duration(self.eta_s)} left")
        return " - ".join(parts)


def _number(value) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def training_progress(data: Mapping, state: ProgressState) -> TrainingProgress:
    """The training's ``--progress-json`` line (``data``) with the tracker's ETA (``state``)."""
    dice_on = str(data.get("dice_on") or "")
    return TrainingProgress(
        stage=state.stage,
        fraction=state.fraction,
        elapsed_s=state.elapsed_s,
        eta_s=state.eta_s,
        step=int(_number(data.get("step")) or 0),
        total_steps=int(_number(data.get("total_steps")) or 0),
        loss=_number(data.get("loss")),
        dice=_number(data.get("dice")),
        dice_on="validation" if dice_on == "validation" else dice_on,
    )


def training_command(
    python: str,
    dataset: str | os.PathLike,
    run_folder: str | os.PathLike,
    *,
    device: str = "auto",
    init_from: str | None = None,
    resume: bool = False,
    save_every: int = SAVE_EVERY,
    threads: int | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """``python -m training.train`` on every case of ``dataset`` (``--fold all``: a user's few
    cases are all needed for training) with machine-readable progress. ``init_from`` (a task
    name, ``NAME@K`` or a checkpoint) fine-tunes instead of starting from scratch; ``extra``
    are further options (kept in the run record, so a resume repeats them)."""
    command = [python, "-m", "training.train", "--dataset", str(dataset), "--out", str(run_folder)]
    command += ["--fold", "all", "--progress-json", "--device", device]
    if init_from:
        command += ["--init-from", str(init_from)]
    if resume:
        command.append("--resume")
    command += ["--save-every", str(save_every)]
    if threads:
        command += ["--threads", str(threads)]
    return command + [str(part) for part in extra]


def import_command(python: str, checkpoint: str | os.PathLike) -> list[str]:
    """``segresmamba models import FILE``: registers the task's next version."""
    return [python, "-m", "segresmamba", "models", "import", str(checkpoint)]


class TrainingJob:
    """One training run and the import of its result, polled like an :class:`EngineProcess`.

    ``start()`` takes the lock (TrainingBusyError names the job that holds it) and launches
    training, or only the import when the run had finished training before; ``poll()`` returns
    its events: "log" and "status" lines, "progress" with a :class:`TrainingProgress`, and
    "finished" once, after the import (``returncode`` 0) or a failure (``error_message``).
    ``cancel()`` returns at once and ``poll()`` completes it (``stop()`` waits); the last resume
    state stays for *Resume*. Afterwards ``imported`` is (task, version) and ``model_path`` its file.
    """

    def __init__(
        self,
        record: RunRecord,
        python: str,
        env: Mapping[str, str] | None = None,
        threads: int | None = None,
    ) -> None:
        self.record = record
        self.python = python
        self.env = dict(env) if env is not None else None
        self.threads = threads
        self.phase = "new"  # "training", "importing", "done"
        self.process: EngineProcess | None = None
        self.commands: list[list[str]] = []  # what ran: training (unless trained), the import
        self.log: list[str] = []
        self.error_message = ""
        self.returncode: int | None = None
        self.cancelled = False
        self.progress: TrainingProgress | None = None
        self.imported: tuple[str, int] | None = None
        self.model_path: str | None = None
        self._lock = TrainingLock()

    @classmethod
    def new(
        cls,
        dataset: str | os.PathLike,
        task: str,
        python: str,
        env: Mapping[str, str] | None = None,
        *,
        device: str = "auto",
        init_from: str | None = None,
        save_every: int = SAVE_EVERY,
        threads: int | None = None,
        extra: Sequence[str] = (),
    ) -> TrainingJob:
        """A job for a new run of ``task`` on ``dataset`` (its folder is made by ``start()``)."""
        record = new_run(task, dataset, device, init_from, save_every, extra)
        return cls(record, python, env, threads)

    @property
    def running(self) -> bool:
        return self.phase in ("training", "importing")

    @property
    def run_folder(self) -> Path:
        return self.record.folder

    def describe(self) -> str:
        """``Training mytumour`` or ``Fine-tuning mytumour from mytumour@2``, for status lines."""
        if self.record.init_from:
            return f"Fine-tuning {self.record.task} from {self.record.init_from}"
        return f"Training {self.record.task}"

    def start(self) -> None:
        """Take the lock and start training (or, for a trained run, only the import)."""
        self._lock.acquire(self.record.task, self.record.folder)
        try:
            self.record.folder.mkdir(parents=True, exist_ok=True)
            remove_temporary_files(self.record.folder)  # a crash's leftovers, never a model
            write_run(self.record)
            if self.record.trained:
                self._start_import()
            else:
                self._start_training()
        except BaseException:
            self._lock.release()
            raise

    def _launch(self, command: list[str], main_stage: str) -> None:
        self.commands.append(command)
        self.process = EngineProcess(
            command, env=self.env, cwd=self.record.folder, main_stage=main_stage
        )
        self.process.start()
        self._lock.set_child(self.process.pid)

    def _start_training(self) -> None:
        resume = (self.record.folder / "resume.safetensors").is_file()
        command = training_command(
            self.python,
            self.record.dataset,
            self.record.folder,
            device=self.record.device,
            init_from=self.record.init_from,
            resume=resume,
            save_every=self.record.save_every,
            threads=self.threads,
            extra=self.record.extra,
        )
        self.phase = "training"
        self._launch(command, "training")

    def _start_import(self) -> None:
        self.phase = "importing"
        self._launch(import_command(self.python, self.record.folder / BEST), "importing")

    def poll(self) -> list[Event]:
        """Events since the last call (never blocks)."""
        if self.process is None or self.phase == "done":
            return []
        events: list[Event] = []
        for event in self.process.poll():
            if event.kind == "log":
                self.log.append(event.text)
            if event.kind == "progress" and event.data and event.data.get("stage") == "training":
                self.progress = training_progress(event.data, event.progress)
                event = Event("progress", self.progress.describe(), self.progress, data=event.data)
            if event.kind == "finished" and self.cancelled:
                events += self._cancelled_end(event.returncode)
            elif event.kind == "finished":
                events += self._phase_ended(event.returncode)
            else:
                events.append(event)
        return events

    def _phase_ended(self, returncode: int | None) -> list[Event]:
        process = self.process
        assert process is not None
        if returncode != 0:
            what = "training" if self.phase == "training" else "the import"
            self.error_message = process.error_message or (
                f"{what} stopped with exit code {returncode}; see the log"
            )
            return self._end(returncode or 1)
        if self.phase == "training":
            if not (self.record.folder / BEST).is_file():
                self.error_message = f"training wrote no {BEST} in {self.record.folder}"
                return self._end(1)
            self.record = self.record.updated(trained=True)
            write_run(self.record)
            self._start_import()
            text = (
                f"Importing {self.record.folder / BEST} as the next version of {self.record.task}"
            )
            self.log.append(text)
            return [Event("log", text), Event("status", f"{text}...")]
        self.imported = imported_version(process.log)
        if self.imported is None:
            self.error_message = "the import did not say which version it registered; see the log"
            return self._end(1)
        from .process import imported_model_path

        self.model_path = imported_model_path(process.log)
        self.record = self.record.updated(imported_version=self.imported[1])
        write_run(self.record)
        return self._end(0)

    def _end(self, returncode: int) -> list[Event]:
        self.phase = "done"
        self.returncode = returncode
        self._lock.release()
        return [Event("finished", returncode=returncode)]

    def wait(self, timeout: float | None = None) -> list[Event]:
        """Block until the job (training and import) has ended; for scripts and tests."""
        deadline = None if timeout is None else time.monotonic() + timeout
        events: list[Event] = []
        while self.phase != "done":
            events += self.poll()
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{self.describe()} did not finish within {timeout} s")
            time.sleep(0.05)
        return events

    def cancel(self) -> None:
        """Start stopping and return at once, so the UI thread never waits: the child's process
        tree is asked to end, and :meth:`poll` (the panel's timer) kills what is left, removes a
        temporary file the kill interrupted (the run folder keeps only complete checkpoints, and
        *Resume* continues from the last one) and reports "finished". :meth:`stop` waits."""
        if self.phase == "done" or self.cancelled:
            return
        self.cancelled = True
        self.error_message = "cancelled; resume continues from the last saved step"
        if self.process is None:
            self._cancelled_end(None)
        else:
            self.process.cancel()

    def kill(self) -> None:
        """Kill the child's process tree now (Slicer quitting); :meth:`poll` then ends the job."""
        self.cancel()
        if self.process is not None:
            self.process.kill()

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel and wait until the job has ended and its folder is tidy (scripts, tests)."""
        self.cancel()
        try:
            self.wait(timeout)
        except TimeoutError:
            self.kill()
            self.wait(5.0)

    def _cancelled_end(self, returncode: int | None) -> list[Event]:
        remove_temporary_files(self.record.folder)
        return self._end(returncode if returncode else 130)

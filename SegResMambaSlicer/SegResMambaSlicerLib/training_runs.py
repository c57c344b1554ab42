"""The runs the Slicer module trains, and the lock that lets only one train at a time.

A run lives in ``user_runs_dir()/<task>/<run>`` (``run`` is its start time), and is never
deleted by the module: its ``slicer-job.json`` records how it was started (training set,
fine-tuned model, device, options), whether training finished and which version its import
registered. A run that was cancelled, or whose Slicer was closed, is *unfinished*: *Resume* runs
it again with the same options and ``--resume`` (training refuses other options on resume), or
only imports it when training had finished.

Training a model uses every core and gigabytes of memory, so two at once would each take twice
as long: ``user_runs_dir()/training.lock`` names the job that holds it (task, run, process ids,
host). Every Slicer on the computer sees it; it is taken over once none of its processes is
alive (a crashed Slicer, whose training child was killed too). Standard library only.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from segresmamba.errors import SegResMambaError
from segresmamba.home import user_runs_dir

__all__ = [
    "JOB_FILE",
    "LOCK_FILE",
    "LockHolder",
    "RunRecord",
    "TrainingBusyError",
    "TrainingLock",
    "new_run",
    "read_run",
    "remove_temporary_files",
    "unfinished_run",
    "write_run",
]

JOB_FILE = "slicer-job.json"
LOCK_FILE = "training.lock"
STARTING_S = 10.0
"""A lock file younger than this that cannot be read yet is being written: not stale."""


class TrainingBusyError(SegResMambaError):
    """Another training job holds the lock; the message names it."""


@dataclass(frozen=True)
class RunRecord:
    """How a run was started and how far it got (``slicer-job.json`` in its folder)."""

    folder: Path
    task: str
    dataset: str
    device: str = "auto"
    init_from: str | None = None
    save_every: int = 10
    extra: tuple[str, ...] = ()
    started: str = ""
    trained: bool = False  # training ended with best.safetensors written
    imported_version: int | None = None  # the version its import registered

    def updated(self, **changes) -> RunRecord:
        return dataclasses.replace(self, **changes)

    @property
    def unfinished(self) -> bool:
        """Not imported yet, and something to continue from: a resume state or a trained run."""
        if self.imported_version is not None:
            return False
        return self.trained or (self.folder / "resume.safetensors").is_file()


def new_run(
    task: str,
    dataset: str | os.PathLike,
    device: str = "auto",
    init_from: str | None = None,
    save_every: int = 10,
    extra: Sequence[str] = (),
) -> RunRecord:
    """A record for a new run of ``task`` in a fresh folder name (the folder is not made)."""
    folder_of_task = user_runs_dir() / task
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder, number = folder_of_task / stamp, 1
    while folder.exists():
        number += 1
        folder = folder_of_task / f"{stamp}-{number}"
    return RunRecord(
        folder=folder,
        task=task,
        dataset=str(Path(dataset).resolve()),
        device=device,
        init_from=init_from,
        save_every=int(save_every),
        extra=tuple(str(part) for part in extra),
        started=time.strftime("%Y-%m-%dT%H:%M:%S"),
    )


def _write_json(path: Path, data: dict) -> None:
    """Atomically: a reader (another Slicer) never sees half a file."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def write_run(record: RunRecord) -> None:
    data = dataclasses.asdict(record)
    data["folder"] = str(record.folder)
    data["extra"] = list(record.extra)
    _write_json(record.folder / JOB_FILE, data)


def read_run(folder: str | os.PathLike) -> RunRecord | None:
    """The record in ``folder``, or None when there is none or it cannot be read."""
    folder = Path(folder)
    try:
        data = json.loads((folder / JOB_FILE).read_text(encoding="utf-8"))
        names = {f.name for f in dataclasses.fields(RunRecord)}
        kept = {k: v for k, v in data.items() if k in names}
        kept.update(folder=folder, extra=tuple(kept.get("extra") or ()))
        return RunRecord(**kept)
    except (OSError, ValueError, TypeError):
        return None


def unfinished_run(task: str) -> RunRecord | None:
    """The newest unfinished run of ``task``, for *Resume*; None when every run is done."""
    folder = user_runs_dir() / task
    if not folder.is_dir():
        return None
    for run in sorted(folder.iterdir(), key=lambda p: p.name, reverse=True):
        record = read_run(run) if run.is_dir() else None
        if record is not None and record.task == task and record.unfinished:
            return record
    return None


def remove_temporary_files(folder: str | os.PathLike) -> list[Path]:
    """Remove the hidden temporary files a killed writer left in ``folder``
    (``.NAME.<pid>.tmp``, ``.NAME.xxxx.part.EXT``); complete files are never touched."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        name = path.name
        if path.is_file() and name.startswith(".") and (name.endswith(".tmp") or ".part" in name):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this computer."""
    if pid <= 0:
        return False
    if sys.platform == "win32":  # os.kill(pid, 0) would terminate it there
        import ctypes

        kernel = ctypes.windll.kernel32
        handle = kernel.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        kernel.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@dataclass(frozen=True)
class LockHolder:
    """What the lock file says about the job that holds it."""

    task: str
    run: str
    pids: tuple[int, ...]
    host: str
    started: str

    def alive(self) -> bool:
        """True while any of its processes runs; a lock from another host counts as held."""
        if self.host != socket.gethostname():
            return True
        return any(_alive(pid) for pid in self.pids)

    def describe(self) -> str:
        where = "" if self.host == socket.gethostname() else f" on {self.host}"
        return (
            f"another training job is running: task {self.task}, run {self.run} (process "
            f"{', '.join(map(str, self.pids))}{where}, since {self.started}); wait for it to "
            "finish or cancel it in the Slicer that started it"
        )


class TrainingLock:
    """``user_runs_dir()/training.lock``: created exclusively, so of two jobs starting at once
    only one gets it; it lists the Slicer's and the training child's process ids."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path) if path is not None else user_runs_dir() / LOCK_FILE
        self.held = False
        self._content: dict = {}

    def holder(self) -> LockHolder | None:
        """The job holding the lock (alive or not), or None when there is no readable lock."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return LockHolder(
                task=str(data["task"]),
                run=str(data["run"]),
                pids=tuple(int(p) for p in data["pids"]),
                host=str(data.get("host", "")),
                started=str(data.get("started", "")),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def acquire(self, task: str, run: str | os.PathLike) -> None:
        """Hold the lock for ``task``'s ``run``, taking over a stale one; TrainingBusyError
        (naming the running job) when a live job holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._content = {
            "task": task,
            "run": str(run),
            "pids": [os.getpid()],
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        for _ in range(3):
            try:
                handle = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._refuse_or_clear()
                continue
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                json.dump(self._content, file)
            self.held = True
            return
        raise TrainingBusyError(f"cannot take the training lock {self.path}; try again")

    def _refuse_or_clear(self) -> None:
        holder = self.holder()
        if holder is None:  # being written, or garbage: wait for a young one, clear an old one
            try:
                age = time.time() - self.path.stat().st_mtime
            except FileNotFoundError:
                return
            if age < STARTING_S:
                raise TrainingBusyError("another training job is starting; try again shortly")
        elif holder.alive():
            raise TrainingBusyError(holder.describe())
        self.path.unlink(missing_ok=True)  # stale: its processes are gone

    def set_child(self, pid: int | None) -> None:
        """Add the child's process id: the lock stays held while it runs, even if this
        Slicer is gone."""
        if self.held and pid is not None:
            self._content["pids"] = [os.getpid(), int(pid)]
            _write_json(self.path, self._content)

    def release(self) -> None:
        if self.held:
            self.held = False
            holder = self.holder()
            if holder is not None and holder.run == self._content.get("run"):
                self.path.unlink(missing_ok=True)

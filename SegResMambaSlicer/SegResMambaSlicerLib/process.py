"""Run the engine's command in a child process that the Slicer UI polls, and cancel it cleanly.

Inference takes minutes on a CPU; run inside Slicer's own Python it would freeze the UI and
could not be stopped (the peers' most common complaint). So the module starts
``PythonSlicer -m segresmamba segment ... --progress-json`` in its own process group and calls
:meth:`EngineProcess.poll` from a QTimer. Nothing here imports Qt, Slicer or the engine, so it is
tested with plain pytest and real subprocesses.
"""

from __future__ import annotations

import codecs
import importlib.util
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .progress import ProgressState, ProgressTracker, format_duration, parse_progress

__all__ = [
    "EngineProcess",
    "Event",
    "ProgressState",
    "ProgressTracker",
    "engine_environment",
    "find_python",
    "format_duration",
    "imported_model_path",
    "imported_task_name",
    "imported_version",
    "parse_progress",
    "segment_command",
    "training_root",
    "use_module_engine",
]

MODULE_DIR = Path(__file__).resolve().parents[1]
"""The module folder: it holds the engine package ``segresmamba``, so the child imports the
very files Slicer loaded."""

_LINE_BREAK = re.compile(r"(\r\n|\n|\r)")


@dataclass(frozen=True)
class Event:
    """What :meth:`EngineProcess.poll` reports.

    kind "log": a complete output line (for the log pane); "status": a transient line that a
    progress bar redraws with a carriage return (shown, not logged); "progress": a parsed JSON
    progress line (``progress`` set); "finished": the process ended (``returncode`` set, negative
    or 130 after a cancel).
    """

    kind: str
    text: str = ""
    progress: ProgressState | None = None
    returncode: int | None = None
    data: Mapping | None = None  # "progress": the whole JSON line (training adds step, loss...)


def find_python(slicer_home: str | os.PathLike | None = None) -> str:
    """The Python that runs the engine: Slicer's ``PythonSlicer`` (in ``<slicer_home>/bin``, else
    on PATH). Slicer sets ``sys.executable`` to PythonSlicer too, as found on PATH at startup
    (empty when not found; qSlicerCoreApplication), so inside Slicer it is the last resort, and
    FileNotFoundError names where it looked when that is empty or not PythonSlicer. Outside
    Slicer (``slicer_home`` None, a plain interpreter) it is this interpreter."""
    names = ("PythonSlicer.exe", "PythonSlicer") if sys.platform == "win32" else ("PythonSlicer",)
    executable = Path(sys.executable) if sys.executable else None
    stem = executable.stem.lower() if executable is not None else ""
    inside_slicer = slicer_home is not None or stem.startswith("slicer") or stem == "pythonslicer"
    places = [Path(slicer_home) / "bin"] if slicer_home is not None else []
    for name in names:
        for folder in places:
            if (folder / name).is_file():
                return str(folder / name)
        found = shutil.which(name)
        if found:
            return found
    if executable is not None and (not inside_slicer or stem == "pythonslicer"):
        return sys.executable
    where = " and ".join([*(str(folder) for folder in places), "the folders on PATH"])
    raise FileNotFoundError(
        f"cannot find {names[0]}, the Python that runs the SegResMamba engine, in {where}; "
        "reinstall Slicer"
    )


def use_module_engine(module_dir: str | os.PathLike = MODULE_DIR) -> str:
    """Make this Python import the engine from the module folder, as the child does.

    Slicer appends a module's folder to ``sys.path``, while the child gets it first on
    PYTHONPATH (:func:`engine_environment`), so a copy installed elsewhere (``pip install
    segresmamba`` into Slicer, another checkout) would run in Slicer and the module folder's in
    the child. The module folder's package is imported under the name ``segresmamba`` here too.
    Returns "" or, when another copy was imported already and cannot be replaced, a warning
    naming both folders."""
    own = (Path(module_dir) / "segresmamba").resolve()
    loaded = sys.modules.get("segresmamba")
    if loaded is not None:
        found = Path(getattr(loaded, "__file__", "") or ".").resolve().parent
        if found == own:
            return ""
        return (
            f"Slicer has already imported another copy of the SegResMamba engine ({found}), "
            f"while segmentations run with the module's own ({own}); uninstall the other copy "
            "(pip uninstall segresmamba) and restart Slicer"
        )
    spec = importlib.util.find_spec("segresmamba")
    if spec is not None and spec.origin and Path(spec.origin).resolve().parent == own:
        return ""
    spec = importlib.util.spec_from_file_location(
        "segresmamba", own / "__init__.py", submodule_search_locations=[str(own)]
    )
    if spec is None or spec.loader is None or not (own / "__init__.py").is_file():
        return f"the SegResMamba engine is missing from the module folder ({own})"
    module = importlib.util.module_from_spec(spec)
    sys.modules["segresmamba"] = module
    spec.loader.exec_module(module)
    return ""


def engine_environment(
    base: Mapping[str, str] | None = None, module_dir: str | os.PathLike = MODULE_DIR
) -> dict[str, str]:
    """The child's environment: ``base`` (Slicer's startup environment, else ours) with the
    module folder first on PYTHONPATH, so ``-m segresmamba`` finds the engine the module ships,
    the copy :func:`use_module_engine` makes Slicer import too (and ``-m training.train`` the
    training code, see :func:`training_root`), and unbuffered output, so progress arrives as it
    happens. The engine leaves one of the process's cores to Slicer's interface
    (``SEGRESMAMBA_RESERVE_CORES``, unless already set)."""
    env = dict(os.environ if base is None else base)
    env.setdefault("SEGRESMAMBA_RESERVE_CORES", "1")
    paths = [str(module_dir)]
    training = training_root(module_dir)
    if training is not None and training != Path(module_dir):
        paths.append(str(training))
    paths += [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def training_root(module_dir: str | os.PathLike = MODULE_DIR) -> Path | None:
    """The folder holding the ``training`` package that ``-m training.train`` runs: the module
    folder where the extension is built or installed (CMake copies ``training/`` there), its
    parent in a source checkout; None when neither has it. The engine never imports it."""
    for folder in (Path(module_dir), Path(module_dir).parent):
        if (folder / "training" / "train.py").is_file():
            return folder
    return None


def imported_task_name(lines: Sequence[str]) -> str | None:
    """The user task ``segresmamba models import`` registered (``task NAME is registered: ...``)."""
    for line in reversed(lines):
        if line.startswith("task ") and " is registered: " in line:
            return line[len("task ") :].split(" is registered: ", 1)[0].strip()
    return None


def imported_model_path(lines: Sequence[str]) -> str | None:
    """The cache path ``segresmamba models import`` printed (``imported FILE as PATH``)."""
    for line in reversed(lines):
        if line.startswith("imported ") and " as " in line:
            return line.rsplit(" as ", 1)[1].strip()
    return None


def imported_version(lines: Sequence[str]) -> tuple[str, int] | None:
    """The task and version ``segresmamba models import`` registered (``version K of task NAME``)."""
    for line in reversed(lines):
        match = re.fullmatch(r"version (\d+) of task (\S+)", line.strip())
        if match:
            return match[2], int(match[1])
    return None


def segment_command(
    python: str,
    task: str,
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    model: str | None = None,
    device: str = "auto",
    fast: bool = False,
    regions: bool = False,
    overlap: float | None = None,
) -> list[str]:
    """``python -m segresmamba segment`` with machine-readable progress for these inputs."""
    command = [python, "-m", "segresmamba", "segment", "-t", task]
    for path in inputs:
        command += ["-i", str(path)]
    command += ["-o", str(output), "--device", device, "--progress-json", "--overwrite"]
    if model:
        command += ["--model", str(model)]
    if fast:
        command.append("--fast")
    if regions:
        command.append("--regions")
    if overlap is not None:
        command += ["--overlap", str(overlap)]
    return command


class EngineProcess:
    """One engine command in its own process group, read by a thread, polled by the UI.

    ``start()`` launches it; ``poll()`` returns the events since the last call without blocking;
    ``cancel()`` ends the whole process tree (PythonSlicer is a launcher whose child does the
    work, so killing one pid is not enough) without blocking either: later polls finish the
    kill, and ``stop()`` waits for it. ``log`` keeps every line for the log pane and
    ``error_message`` the engine's one-line ``error: ...`` for the UI. ``main_stage`` is the
    progress stage whose rate gives the ETA ("segmenting", or "training" for a training run).
    """

    def __init__(
        self,
        command: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike | None = None,
        main_stage: str = "segmenting",
    ) -> None:
        self.command = [str(part) for part in command]
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.log: list[str] = []
        self.error_message = ""
        self.cancelled = False
        self.returncode: int | None = None
        self.tracker = ProgressTracker(main_stage)  # "training" for a training run
        self._process: subprocess.Popen | None = None
        self._queue: queue.Queue = queue.Queue()
        self._reader: threading.Thread | None = None
        self._finished_reported = False
        self._eof = False
        self._kill_at: float | None = None  # after a cancel: when poll() kills what is left

    @property
    def running(self) -> bool:
        return self._process is not None and self.returncode is None

    @property
    def pid(self) -> int | None:
        """The child's process id (the leader of its process group), once started."""
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Launch the command; stdout and stderr are merged so lines keep their order."""
        kwargs: dict = {}
        if sys.platform == "win32":
            kwargs["creationflags"] = (
                subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
            )
        else:
            kwargs["start_new_session"] = True  # its own process group: killpg reaches all
        self._process = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.cwd,
            **kwargs,
        )
        self._reader = threading.Thread(target=self._read, name="segresmamba-output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        """Split the output on \\n and \\r as it arrives; a \\r-ended piece is a redraw."""
        assert self._process is not None and self._process.stdout is not None
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        stream = self._process.stdout
        while True:
            chunk = stream.read1(65536) if hasattr(stream, "read1") else stream.read(1)
            if not chunk:
                break
            pending += decoder.decode(chunk)
            pieces = _LINE_BREAK.split(pending)
            pending = pieces.pop()
            for text, ending in zip(pieces[::2], pieces[1::2]):
                self._queue.put(("status" if ending == "\r" else "line", text))
        pending += decoder.decode(b"", final=True)
        if pending:
            self._queue.put(("line", pending))
        self._queue.put(("eof", ""))

    def poll(self) -> list[Event]:
        """Events since the last call (never blocks); "finished" comes once, after all output
        and the process's end. After a cancel, it also completes the kill."""
        self._finish_kill()
        events: list[Event] = []
        while True:
            try:
                kind, text = self._queue.get_nowait()
            except queue.Empty:
                break
            if kind == "eof":
                self._eof = True
            elif kind == "status":
                if text.strip():
                    events.append(Event("status", text.strip()))
            else:
                events.append(self._line_event(text))
        ended = self._process is not None and self._process.poll() is not None
        if self._eof and ended and not self._finished_reported:
            self.returncode = self._process.wait()
            self._finished_reported = True
            events.append(Event("finished", returncode=self.returncode))
        return events

    def _line_event(self, text: str) -> Event:
        progress = parse_progress(text)
        if progress is not None:
            state = self.tracker.update(
                progress["stage"], progress["fraction"], progress["elapsed_s"]
            )
            return Event("progress", text, progress=state, data=progress)
        self.log.append(text)
        if text.startswith("error: "):
            self.error_message = text[len("error: ") :].strip()
        return Event("log", text)

    def wait(self, timeout: float | None = None) -> list[Event]:
        """Block until the process ends (scripts and tests); returns all remaining events."""
        deadline = None if timeout is None else time.monotonic() + timeout
        events: list[Event] = []
        while not self._finished_reported:
            events += self.poll()
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{self.command[:4]} did not finish within {timeout} s")
            time.sleep(0.05)
        return events

    def cancel(self, grace_s: float = 3.0) -> None:
        """Start ending the process tree and return at once, so the UI thread never waits: a
        polite terminate now; :meth:`poll` (the UI's timer) kills the whole group once the
        launcher has gone or ``grace_s`` seconds have passed. "finished" follows."""
        process = self._process
        if process is None or self._finished_reported or self.cancelled:
            return
        self.cancelled = True  # also when it has just ended: its result is not wanted
        if process.poll() is not None:
            self._kill_at = time.monotonic()  # the group may outlive the launcher
        elif sys.platform == "win32":
            subprocess.Popen(  # /F: forced at once; not waited for
                ["taskkill", "/T", "/F", "/PID", str(process.pid)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                creationflags=subprocess.CREATE_NO_WINDOW,
            )
        else:
            _signal_group(process.pid, signal.SIGTERM)
            self._kill_at = time.monotonic() + grace_s

    def kill(self) -> None:
        """Kill the whole process tree now, without the grace time (Slicer quitting)."""
        self.cancel(grace_s=0.0)
        if not self._finished_reported:
            self._kill_at = time.monotonic()
            self._finish_kill()

    def stop(self, grace_s: float = 3.0) -> None:
        """Cancel and wait until the process tree has gone (Slicer quitting, scripts)."""
        self.cancel(grace_s)
        try:
            self.wait(timeout=grace_s + 5.0)
        except TimeoutError:
            pass

    def _finish_kill(self) -> None:
        process = self._process
        if self._kill_at is None or process is None:
            return
        if process.poll() is not None or time.monotonic() >= self._kill_at:
            # the launcher may be gone while its child still runs: kill the group regardless
            if sys.platform != "win32":
                _signal_group(process.pid, signal.SIGKILL)
            self._kill_at = None


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass

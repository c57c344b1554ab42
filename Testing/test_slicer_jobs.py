"""The module's child processes with real subprocesses (issue 20, points 18-21): Cancel returns
at once and the timer finishes the kill, quitting Slicer stops every job and removes its
temporary folder, Slicer and the child import the same engine, and PythonSlicer is found where
Slicer says it is."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from SegResMambaSlicerLib import process
from SegResMambaSlicerLib.jobs import JobList
from SegResMambaSlicerLib.process import EngineProcess

REPO = Path(__file__).resolve().parents[1]
MODULE_FILE = REPO / "SegResMambaSlicer" / "SegResMambaSlicer.py"
POSIX = pytest.mark.skipif(sys.platform == "win32", reason="process groups are POSIX here")

STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited by the grandchild
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print("pids", child.pid, flush=True)
time.sleep(600)
"""
"""An engine that ignores the polite terminate, with a grandchild that ignores it too."""


def start_stubborn() -> tuple[EngineProcess, int]:
    engine = EngineProcess([sys.executable, "-c", textwrap.dedent(STUBBORN)])
    engine.start()
    deadline = time.monotonic() + 60
    while True:
        lines = [e.text for e in engine.poll() if e.kind == "log" and e.text.startswith("pids")]
        if lines:
            return engine, int(lines[0].split()[1])
        assert time.monotonic() < deadline, engine.log
        time.sleep(0.05)


def gone(pid: int, within_s: float = 5.0) -> bool:
    """Whether ``pid`` has ended (a reparented grandchild is reaped by init shortly after)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@POSIX
def test_cancel_returns_at_once_and_the_timer_finishes_the_kill():
    """Point 20: Cancel used to wait in the UI thread (terminate, up to grace_s, then the
    reader). Now it returns at once; the timer's polls kill the group after the grace time."""
    engine, grandchild = start_stubborn()
    started = time.monotonic()
    engine.cancel(grace_s=1.0)
    assert time.monotonic() - started < 0.2, "cancel blocked the caller"
    assert engine.cancelled and engine.running  # it ignores the terminate: still there
    events = []
    while not any(event.kind == "finished" for event in events):  # the panel's 200 ms timer
        assert time.monotonic() - started < 10, "the timer never finished the kill"
        time.sleep(0.2)
        tick = time.monotonic()
        events += engine.poll()
        assert time.monotonic() - tick < 0.1, "a poll blocked the UI thread"
    assert 1.0 <= time.monotonic() - started < 5.0
    assert events[-1].returncode != 0 and not engine.running
    assert gone(engine.pid) and gone(grandchild)
    with pytest.raises(ProcessLookupError):
        os.killpg(engine.pid, 0)  # no member of its process group is left


@POSIX
def test_a_cancelled_job_is_polled_to_its_end_by_the_job_list():
    """The panel drops a cancelled job at once; the logic's JobList keeps polling it from the
    timer until its process tree has gone, then forgets it."""
    jobs = JobList()
    engine, grandchild = start_stubborn()
    jobs.add(engine)
    started = time.monotonic()
    jobs.cancel(engine)
    assert time.monotonic() - started < 0.2 and jobs.stopping
    while jobs.stopping:
        assert time.monotonic() - started < 10, "the job list never finished the kill"
        time.sleep(0.2)
        jobs.tick()
    assert not engine.running and gone(grandchild) and len(jobs) == 0


@pytest.fixture
def segmentation_job(tmp_path):
    """A SegmentationJob on a real volume node (slicer-core), run by the real engine command."""
    slicer = pytest.importorskip("slicer", reason="slicer-core (the test extra) is missing")
    import numpy as np
    import SimpleITK as sitk

    from SegResMambaSlicerLib.logic import SegmentationJob
    from SegResMambaSlicerLib.volumes import image_to_volume_node

    scene = slicer.vtkMRMLScene()
    image = sitk.GetImageFromArray(np.full((24, 24, 24), -500, np.int16))
    node = image_to_volume_node(scene, image, "CT")
    return SegmentationJob(scene, "phantom", [node], device="cpu", python=sys.executable)


@POSIX
def test_quitting_stops_every_job_and_removes_its_temporary_folder(segmentation_job):
    """Point 18: jobs a script started (startSegmentation, modelCommand) and never polled used
    to outlive Slicer with their folders; the logic connects JobList.stop_all to aboutToQuit."""
    jobs = JobList()
    segmentation_job.start()
    jobs.add(segmentation_job)
    folder = segmentation_job.folder
    segmenting = segmentation_job.process.pid
    engine, grandchild = start_stubborn()  # like a model download that will not stop
    jobs.add(engine)
    assert folder.is_dir()
    started = time.monotonic()
    assert jobs.stop_all(grace_s=1.0) == 2
    assert time.monotonic() - started < 6.0
    assert not folder.exists() and segmentation_job.folder is None
    assert gone(segmenting) and gone(engine.pid) and gone(grandchild)
    assert len(jobs) == 0
    assert segmentation_job.finish() is None and "cancelled" in segmentation_job.error


def _logic_methods() -> dict[str, str]:
    tree = ast.parse(MODULE_FILE.read_text(encoding="utf-8"))
    logic = next(
        node
        for node in tree.body
        if isinstance(node, ast.ClassDef) and node.name == "SegResMambaSlicerLogic"
    )
    return {
        item.name: ast.unparse(item) for item in logic.body if isinstance(item, ast.FunctionDef)
    }


def test_the_logic_tracks_its_jobs_and_stops_them_when_slicer_quits():
    """The Qt side of point 18 (the module file needs Slicer's Qt, so it is read, not run)."""
    methods = _logic_methods()
    assert "self.jobs = JobList()" in methods["__init__"]
    assert "slicer.app.aboutToQuit.connect(self.jobs.stop_all)" in methods["__init__"]
    assert "return self.jobs.add(job)" in methods["startSegmentation"]
    assert "return self.jobs.add(process)" in methods["modelCommand"]


def _other_copy(tmp_path: Path) -> Path:
    """A folder holding another copy of the engine (as ``pip install segresmamba`` would)."""
    other = tmp_path / "site-packages"
    (other / "segresmamba").mkdir(parents=True)
    (other / "segresmamba" / "__init__.py").write_text("OTHER = True\n", encoding="utf-8")
    return other


SLICER_LIKE = """
import sys
sys.path.append({module_dir!r})  # what Slicer does with a scripted module's folder
{before}
from SegResMambaSlicerLib.process import use_module_engine
warning = use_module_engine()
import segresmamba
print(segresmamba.__file__)
print(warning or "-")
"""


def _python(code: str, env: dict) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-S", "-c", textwrap.dedent(code)],  # -S: no .pth (editable installs)
        capture_output=True,
        encoding="utf-8",
        env=env,
        check=True,
    )
    return done.stdout.splitlines()


def test_slicer_and_the_child_import_the_same_engine(tmp_path):
    """Point 19: Slicer appends the module folder to sys.path, the child puts it first on
    PYTHONPATH; with another copy installed, the two used to load different engines."""
    other = _other_copy(tmp_path)
    module_dir = str(process.MODULE_DIR)
    slicer_env = {**os.environ, "PYTHONPATH": str(other)}  # the other copy wins in Slicer
    code = SLICER_LIKE.format(module_dir=module_dir, before="")
    in_slicer, warning = _python(code, slicer_env)
    child_env = process.engine_environment(slicer_env)
    (in_child,) = _python("import segresmamba; print(segresmamba.__file__)", child_env)
    own = str(process.MODULE_DIR / "segresmamba" / "__init__.py")
    assert Path(in_slicer) == Path(in_child) == Path(own)
    assert warning == "-"
    # already imported from elsewhere before the module loaded: said, naming both copies
    code = SLICER_LIKE.format(module_dir=module_dir, before="import segresmamba")
    in_slicer, warning = _python(code, slicer_env)
    assert Path(in_slicer).parent == other / "segresmamba"
    assert str(other / "segresmamba") in warning and module_dir in warning
    assert "pip uninstall segresmamba" in warning


@POSIX
def test_pythonslicer_as_sys_executable_is_used_inside_slicer(tmp_path, monkeypatch):
    """Point 21: Slicer sets sys.executable to PythonSlicer (qSlicerCoreApplication), so it is
    the fallback inside Slicer when <slicer_home>/bin and PATH do not have it; an empty one
    (Slicer found none) is not."""
    python_slicer = tmp_path / "elsewhere" / "PythonSlicer"
    python_slicer.parent.mkdir()
    shutil.copy(sys.executable, python_slicer)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(sys, "executable", str(python_slicer))
    assert process.find_python(tmp_path / "Slicer-5.12.3") == str(python_slicer)
    monkeypatch.setattr(sys, "executable", "")
    with pytest.raises(FileNotFoundError, match="cannot find PythonSlicer"):
        process.find_python(tmp_path / "Slicer-5.12.3")

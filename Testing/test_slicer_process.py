"""The Slicer module's Qt-free parts: the child process, dependency checks, input matching, the
panel. Real subprocesses and the real registries; no Slicer, slicer-core or Qt needed."""

from __future__ import annotations

import importlib.metadata
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest
import tomllib

from segresmamba.scan import BACKEND_DESCRIPTIONS, BACKENDS, describe_backend, resolve_backend
from segresmamba.tasks import get_task, list_tasks
from SegResMambaSlicerLib import dependencies, process
from SegResMambaSlicerLib.dependencies import Missing, Requirement, find_missing, install_plan
from SegResMambaSlicerLib.panel import panel_state
from SegResMambaSlicerLib.process import EngineProcess, ProgressTracker, parse_progress
from SegResMambaSlicerLib.tasks import ModelStatus, match_volumes, model_status, task_names

REPO = Path(__file__).resolve().parents[1]


def run_script(body: str, **kwargs) -> EngineProcess:
    engine = EngineProcess([sys.executable, "-c", textwrap.dedent(body)], **kwargs)
    engine.start()
    return engine


def test_output_lines_progress_and_the_one_line_error():
    engine = run_script(
        r"""
        import json, sys
        print("note: loading", file=sys.stderr, flush=True)
        for f in (0.0, 0.05, 0.5, 1.0):
            print(json.dumps({"event": "progress", "case": "c", "stage": "segmenting",
                              "fraction": f, "elapsed_s": 10 * f}), file=sys.stderr, flush=True)
        sys.stderr.write("bar 10%\rbar 50%\r"); sys.stderr.flush()
        print("error: the CT input is 2D; give a 3D volume", file=sys.stderr)
        sys.exit(2)
        """
    )
    events = engine.wait(timeout=60)
    kinds = [event.kind for event in events]
    assert kinds[-1] == "finished" and events[-1].returncode == 2
    assert "status" in kinds  # carriage-return redraws are shown, not logged
    progress = [event.progress for event in events if event.kind == "progress"]
    assert [p.fraction for p in progress] == [0.0, 0.05, 0.5, 1.0]
    assert progress[2].eta_s == pytest.approx(5.0)  # 0.5 done in 5 s -> 5 s left
    assert engine.log == ["note: loading", "error: the CT input is 2D; give a 3D volume"]
    assert engine.error_message == "the CT input is 2D; give a 3D volume"
    assert engine.poll() == []  # "finished" comes once


@pytest.mark.skipif(sys.platform == "win32", reason="process groups are POSIX here")
def test_cancel_ends_the_whole_process_tree(tmp_path):
    pid_file = tmp_path / "child.pid"
    engine = run_script(
        f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        print("started", flush=True)
        time.sleep(600)
        """
    )
    deadline = time.monotonic() + 60
    while not pid_file.exists() or not pid_file.read_text(encoding="utf-8"):
        assert time.monotonic() < deadline, "the child did not start"
        time.sleep(0.05)
    child = int(pid_file.read_text(encoding="utf-8"))
    engine.cancel(grace_s=2.0)
    events = engine.wait(timeout=30)
    assert engine.cancelled and events[-1].kind == "finished" and events[-1].returncode != 0
    for _ in range(100):  # the grandchild is reaped by init shortly after the kill
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the grandchild {child} outlived the cancel")


def test_the_eta_of_a_training_run_counts_from_its_first_step():
    """A training child reports stage "training"; its ETA is measured from the first step on
    (model loading and planning before it would distort the rate)."""
    engine = run_script(
        r"""
        import json
        for step in (1, 2, 3):
            print(json.dumps({"event": "progress", "stage": "training", "fraction": step / 4,
                              "elapsed_s": 30.0 + 10 * step, "step": step, "total_steps": 4,
                              "loss": 1.0 / step, "dice": None, "dice_on": "validation"}))
        """,
        main_stage="training",
    )
    events = [e for e in engine.wait(timeout=60) if e.kind == "progress"]
    assert [e.data["step"] for e in events] == [1, 2, 3]
    assert events[0].progress.eta_s is None  # one point: no rate yet
    assert events[2].progress.eta_s == pytest.approx(20 / 0.5 * 0.25)  # 10 s a step, 1 left
    default = ProgressTracker()  # an inference tracker never anchors on "training"
    assert default.update("training", 0.5, 40.0).eta_s is None


def test_progress_lines_and_eta():
    assert parse_progress("note: x") is None
    assert parse_progress('{"event": "other"}') is None
    line = parse_progress('{"event": "progress", "stage": "segmenting", "fraction": 1.7}')
    assert line["fraction"] == 1.0 and line["elapsed_s"] == 0.0
    tracker = ProgressTracker()
    assert tracker.update("preparing", 0.0, 30.0).eta_s is None  # model loading: no rate yet
    assert tracker.update("segmenting", 0.05, 40.0).eta_s is None
    assert tracker.update("segmenting", 0.06, 41.0).eta_s is None  # 1 %: too little to judge
    state = tracker.update("segmenting", 0.25, 60.0)
    assert state.eta_s == pytest.approx(20 / 0.2 * 0.75)
    assert state.describe() == "segmenting 25% - about 1 min 15 s left"
    assert process.format_duration(3725) == "1 h 2 min"


def test_engine_command_environment_and_python(tmp_path):
    command = process.segment_command(
        "py", "brats", ["a.nrrd", "b.nrrd"], tmp_path / "o.nrrd", model="m", fast=True, regions=True
    )
    assert command[:6] == ["py", "-m", "segresmamba", "segment", "-t", "brats"]
    assert command.count("-i") == 2 and "--progress-json" in command and "--regions" in command
    env = process.engine_environment({"PYTHONPATH": "/x"})
    # a source checkout: the training code (-m training.train) is beside the module folder
    assert env["PYTHONPATH"].split(os.pathsep) == [str(process.MODULE_DIR), str(REPO), "/x"]
    assert process.training_root() == REPO
    assert (process.MODULE_DIR / "segresmamba" / "__main__.py").is_file()
    installed = tmp_path / "qt-scripted-modules"  # built or installed: inside the module folder
    (installed / "training").mkdir(parents=True)
    (installed / "training" / "train.py").write_text("", encoding="utf-8")
    assert process.training_root(installed) == installed
    env = process.engine_environment({}, module_dir=installed)
    assert env["PYTHONPATH"] == str(installed)
    assert process.training_root(tmp_path / "elsewhere") is None
    assert process.find_python() == sys.executable  # plain Python, outside Slicer
    with pytest.raises(FileNotFoundError) as missing:  # inside Slicer: never Slicer itself
        process.find_python(tmp_path)
    assert "cannot find PythonSlicer" in str(missing.value)
    assert str(tmp_path / "bin") in str(missing.value) and "PATH" in str(missing.value)
    launcher = (
        tmp_path / "bin" / ("PythonSlicer.exe" if sys.platform == "win32" else "PythonSlicer")
    )
    launcher.parent.mkdir()
    launcher.write_text("", encoding="utf-8")
    assert process.find_python(tmp_path) == str(launcher)
    assert process.imported_model_path(["x", "imported a.zip as /c/m.safetensors"]) == (
        "/c/m.safetensors"
    )
    lines = ["task my-liver is registered: ...", "imported b.safetensors as /c/my-liver@3.st"]
    assert process.imported_version(lines) is None
    assert process.imported_version([*lines, "version 3 of task my-liver"]) == ("my-liver", 3)


def test_requirements_are_the_engines_and_missing_ones_are_explained():
    declared = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    everything = (*dependencies.REQUIREMENTS, *dependencies.DICOM_SEG_REQUIREMENTS)
    assert sorted(r.spec for r in everything) == sorted(declared["dependencies"])
    assert find_missing() == []  # this environment has them all
    absent = Requirement("no-such-package-xyz", "no_such_package_xyz", "1.0", "testing")
    old = Requirement("numpy", "numpy", "999.0", "testing")
    torch = Requirement("torch", "torch", "99.0", "runs the network")
    missing = find_missing([absent, old, torch])
    # numpy ships with Slicer: its version is Slicer's business, never "too old" for us
    assert [m.requirement.distribution for m in missing] == ["no-such-package-xyz", "torch"]
    assert "not installed" in missing[0].describe() and "too old" in missing[1].describe()
    plan = install_plan(missing)
    assert plan.torch == ">=99.0"
    assert plan.pip == ["no-such-package-xyz>=1.0"]
    assert "PyTorch Utils" in plan.summary(True) and "pip" in plan.summary(False)
    assert install_plan([]).empty


def test_install_plan_pins_everything_installed_read_at_run_time():
    """Issue 20, point 14: pip may replace nothing that is installed, Slicer's or anyone's: the
    pins are every distribution of this Python (typing_extensions, pyparsing, ... included),
    read now, less the ones the plan installs. Slicer's own requirements are never installed."""
    everything = [Missing(r) for r in dependencies.REQUIREMENTS]
    plan = install_plan(everything)
    names = {spec.split(">=")[0].lower() for spec in plan.pip}
    assert names and not names & dependencies.SLICER_BUNDLED
    assert {m.requirement.distribution for m in plan.not_installable} == {"numpy", "SimpleITK"}
    assert "monai>=1.4" in plan.pip and plan.torch == ">=2.1"
    pinned = dict(p.split("==") for p in plan.pinned)
    installed = {d.metadata["Name"]: d.version for d in importlib.metadata.distributions()}
    planned = {dependencies.distribution_key(n) for n in [*names, "torch"]}
    expected = {n for n in installed if dependencies.distribution_key(n) not in planned}
    assert set(pinned) == expected  # every installed distribution, nothing hand-listed
    for name in ("numpy", "typing_extensions", "pyparsing", "pydicom", "highdicom", "pip"):
        key = next(n for n in pinned if dependencies.distribution_key(n) == name.replace("_", "-"))
        assert pinned[key] == importlib.metadata.version(name)
    assert "torch" not in pinned and "monai" not in pinned  # being installed: not pinned
    assert f"The {len(plan.pinned)} packages already installed" in plan.summary()
    only_bundled = install_plan([Missing(dependencies.REQUIREMENTS[2])])  # numpy
    assert only_bundled.empty and "Reinstall Slicer" in only_bundled.summary()
    assert dependencies.version_tuple("2.13.0+cpu") == (2, 13, 0)
    # a version pip cannot parse would make it refuse the whole constraints file: not pinned
    odd = {"good": "1.2.3", "local": "2.13.0+cu121", "legacy": "1.0-custom", "Typing_Ext": "4.1"}
    assert dependencies.constraints_for(["typing-ext>=4"], odd) == [
        "good==1.2.3",
        "local==2.13.0+cu121",
    ]


def test_devices_and_scan_backend_are_reported():
    devices = dependencies.describe_devices()
    assert dependencies.engine_device("auto", devices) == "auto"
    assert dependencies.engine_device("cpu", devices) == "cpu"
    if not devices["cuda"] and not devices["mps"]:
        assert dependencies.device_text("auto", devices).startswith("CPU - no GPU detected")
        with pytest.raises(RuntimeError, match="no GPU"):
            dependencies.engine_device("gpu", devices)
    assert dependencies.device_text("gpu", {"cuda": "NVIDIA H100"}) == "GPU: NVIDIA H100"
    # the line says what the engine's own backend choice is, in the engine's own words
    for device in ("cpu", "cuda"):
        chosen = resolve_backend(device="cuda" if device == "cuda" else "cpu")
        text = dependencies.scan_backend_text(device)
        assert text.startswith(f"selective scan: {describe_backend(chosen)}")
    assert resolve_backend(device="cpu") == "numba"  # numba is a dependency
    assert dependencies.scan_backend_text("cpu") == "selective scan: numba-compiled CPU scan"
    assert set(BACKEND_DESCRIPTIONS) == set(BACKENDS)


def test_task_names_without_the_engine_match_the_registry():
    assert task_names() == [task.name for task in list_tasks()]


def test_brats_inputs_are_matched_by_volume_name_in_any_order():
    brats = get_task("brats")
    names = ["t2w", "BraTS-GLI-00001-000-t1c", "t1n", "something else", "t2f"]
    matched = {spec: names[i] for spec, i in match_volumes(brats, names).items()}
    assert matched == {
        "FLAIR": "t2f",
        "T1": "t1n",
        "T1Gd": "BraTS-GLI-00001-000-t1c",
        "T2": "t2w",
    }
    assert match_volumes(brats, ["flair", "T1_post_contrast", "t1", "T2"]) == {
        "FLAIR": 0,
        "T1Gd": 1,
        "T1": 2,
        "T2": 3,
    }
    assert match_volumes(brats, ["CT chest"]) == {}
    assert match_volumes(get_task("btcv"), ["anything", "else"]) == {"CT": 0}
    # the job names its temporary input files after the inputs: the CLI keeps that order
    files = [f"{spec.name}.nrrd" for spec in brats.inputs]
    assert list(brats.match_inputs(files).values()) == files


def test_model_line_and_panel_state(monkeypatch, tmp_path):
    monkeypatch.setenv("SEGRESMAMBA_HOME", str(tmp_path))  # an empty cache
    btcv = get_task("btcv")
    status = model_status("btcv")
    assert not status.installed and not status.downloadable
    assert "no trained weights" in status.text
    devices = {"cuda": None, "mps": None}
    state = panel_state(btcv, [object(), None, None, None], status, "auto", devices, False)
    assert state.input_labels == ["CT:", None, None, None]
    assert not state.apply_enabled and "model" in state.apply_tooltip
    assert not state.brats_option and "numba-compiled CPU scan" in state.device_text
    brats = get_task("brats")
    ready = ModelStatus("brats", "m", "1", tmp_path, False, "m 1 (installed)")
    state = panel_state(brats, [object(), None, object(), None], ready, "gpu", devices, False)
    assert state.input_labels == ["FLAIR:", "T1:", "T1Gd:", "T2:"] and state.brats_option
    assert not state.apply_enabled and "T1, T2" in state.apply_tooltip
    state = panel_state(brats, [object()] * 4, ready, "gpu", devices, False)
    assert not state.apply_enabled and "no GPU" in state.apply_tooltip
    state = panel_state(brats, [object()] * 4, ready, "cpu", devices, True)
    assert state.apply_text == "Cancel" and state.apply_enabled

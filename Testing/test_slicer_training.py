"""Train from the Slicer module, without Slicer: the Teach section's job (SegResMambaSlicerLib.
training_job) runs the real ``-m training.train`` and ``-m segresmamba models import`` as child
processes on a tiny real dataset (two BraTS 2013 cases at 6 mm), in an environment without the
"train" extra, as in Slicer. Cancel kills a run mid-way; Resume finishes it; the lock lets one
job train at a time, even from another process; the panel's decisions are checked as data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import SimpleITK as sitk

from SegResMambaSlicerLib.panel import added_case_text, panel_state, teach_state, version_text
from SegResMambaSlicerLib.process import ProgressState, engine_environment, find_python
from SegResMambaSlicerLib.tasks import (
    ModelStatus,
    TrainingSet,
    default_training_set,
    segmentation_task,
    task_versions,
    teach_task,
    training_set,
)
from SegResMambaSlicerLib.training_job import (
    SAVE_EVERY,
    TrainingJob,
    import_command,
    training_command,
    training_progress,
)
from SegResMambaSlicerLib.training_runs import (
    LOCK_FILE,
    TrainingBusyError,
    TrainingLock,
    new_run,
    read_run,
    unfinished_run,
    write_run,
)

REPO = Path(__file__).resolve().parents[1]
TASK = "mytumour"
COARSE_MM = 6.0
TINY = ["--network", '{"widths": [8, 16, 32, 64]}']  # seconds per step on two cores


@pytest.fixture
def home(tmp_path: Path, monkeypatch) -> Path:
    """A fresh SegResMamba user folder for this test and its children."""
    folder = tmp_path / "home"
    monkeypatch.setenv("SEGRESMAMBA_HOME", str(folder))
    return folder


def _coarse(image: sitk.Image, label: bool) -> sitk.Image:
    size = [int(round(n * s / COARSE_MM)) for n, s in zip(image.GetSize(), image.GetSpacing())]
    interpolator = sitk.sitkNearestNeighbor if label else sitk.sitkLinear
    return sitk.Resample(
        image, size, sitk.Transform(), interpolator, image.GetOrigin(), (COARSE_MM,) * 3,
        image.GetDirection(), 0.0, image.GetPixelID(),
    )  # fmt: skip


@pytest.fixture(scope="module")
def dataset(shared_data: Path, tmp_path_factory) -> Path:
    """Two real BraTS 2013 cases (FLAIR, T1Gd, manual labels) at 6 mm, named as a user's task."""
    source = shared_data / "brats2013-2ch"
    folder = tmp_path_factory.mktemp("datasets") / TASK
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    meta = json.loads((source / "dataset.json").read_text(encoding="utf-8"))
    meta.update(name=TASK, numTraining=2, file_ending=".nii.gz")
    (folder / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
    for case in ("BRATS13_001", "BRATS13_002"):
        for channel in range(2):
            name = f"{case}_{channel:04d}.nii.gz"
            image = _coarse(sitk.ReadImage(str(source / "imagesTr" / name)), False)
            sitk.WriteImage(image, str(folder / "imagesTr" / name))
        label = _coarse(sitk.ReadImage(str(source / "labelsTr" / f"{case}.nii.gz")), True)
        sitk.WriteImage(label, str(folder / "labelsTr" / f"{case}.nii.gz"))
    return folder


@pytest.fixture
def slicer_like_env(home: Path, tmp_path: Path) -> dict[str, str]:
    """The child's environment as the module makes it, with the "train" extra (TensorBoard)
    missing, as in Slicer, where the module installs only the engine's dependencies."""
    blocker = tmp_path / "no-train-extra" / "tensorboard"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text(
        'raise ImportError("tensorboard is not installed")\n', encoding="utf-8"
    )
    env = engine_environment()
    env["PYTHONPATH"] = os.pathsep.join([str(blocker.parent), env["PYTHONPATH"]])
    env["SEGRESMAMBA_HOME"] = str(home)
    return env


def _job(dataset: Path, env, steps: int, *, init_from=None, save_every=SAVE_EVERY, extra=TINY):
    return TrainingJob.new(
        dataset,
        TASK,
        find_python(),
        env,
        device="cpu",
        init_from=init_from,
        save_every=save_every,
        threads=1,
        extra=["--max-steps", str(steps), *(extra if init_from is None else [])],
    )


def _no_temporary_files(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob(".*") if p.is_file()]


# --- commands, progress lines and run records (no training) ----------------------------------


def test_training_and_import_commands(tmp_path: Path):
    command = training_command("py", tmp_path / "d", tmp_path / "r", device="cpu", threads=1)
    assert command[:3] == ["py", "-m", "training.train"]
    assert command[command.index("--dataset") + 1] == str(tmp_path / "d")
    assert command[command.index("--out") + 1] == str(tmp_path / "r")
    assert command[command.index("--fold") + 1] == "all" and "--progress-json" in command
    assert command[command.index("--save-every") + 1] == str(SAVE_EVERY) and SAVE_EVERY <= 25
    assert "--resume" not in command and "--init-from" not in command
    again = training_command("py", "d", "r", init_from="mine@2", resume=True, extra=["-x"])
    assert again[again.index("--init-from") + 1] == "mine@2" and "--resume" in again
    assert again[-1] == "-x"
    assert import_command("py", "r/best.safetensors") == [
        "py", "-m", "segresmamba", "models", "import", "r/best.safetensors",
    ]  # fmt: skip


def test_progress_line_names_step_loss_dice_and_time_left():
    line = {
        "step": 120,
        "total_steps": 300,
        "loss": 0.41234,
        "dice": 0.781,
        "dice_on": "validation",
    }
    state = ProgressState("training", 0.4, 100.0, 150.0)
    text = training_progress(line, state).describe()
    assert text == "step 120 of 300 - loss 0.412 - Dice 0.78 (validation) - about 2 min 30 s left"
    early = training_progress({**line, "dice": None}, ProgressState("training", 0.4, 1.0))
    assert early.describe() == "step 120 of 300 - loss 0.412 - Dice not measured yet"
    on_training = training_progress({**line, "dice_on": "training cases"}, state)
    assert "Dice 0.78 (training cases)" in on_training.describe()


def test_runs_are_kept_and_an_unfinished_one_is_found(home: Path, tmp_path: Path):
    assert unfinished_run(TASK) is None
    first = new_run(TASK, tmp_path / "d", "cpu", None, 10, ["--max-steps", "5"])
    assert first.folder.parent == home / "runs" / TASK
    first.folder.mkdir(parents=True)
    write_run(first)
    assert read_run(first.folder) == first
    assert unfinished_run(TASK) is None  # nothing saved yet: nothing to resume
    (first.folder / "resume.safetensors").write_bytes(b"x")
    assert unfinished_run(TASK) == first
    second = new_run(TASK, tmp_path / "d", "cpu", TASK, 10)
    assert second.folder != first.folder
    second.folder.mkdir()
    write_run(second.updated(trained=True))  # trained, not imported yet: Resume imports it
    assert unfinished_run(TASK).folder == second.folder
    write_run(second.updated(trained=True, imported_version=2))
    assert unfinished_run(TASK).folder == first.folder
    assert read_run(tmp_path) is None and unfinished_run("other") is None


# --- one job at a time ------------------------------------------------------------------------


def _holder_process(home: Path, ready: Path) -> subprocess.Popen:
    """Another Slicer: a separate process that takes the lock for its own run and keeps it."""
    code = textwrap.dedent(
        f"""
        import time
        from SegResMambaSlicerLib.training_runs import TrainingLock
        lock = TrainingLock()
        lock.acquire("braintumour", {str(home / "runs" / "braintumour" / "20250101-120000")!r})
        open({str(ready)!r}, "w").close()
        time.sleep(120)
        """
    )
    env = {**os.environ, "SEGRESMAMBA_HOME": str(home)}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "SegResMambaSlicer"), env.get("PYTHONPATH", "")]
    )
    return subprocess.Popen([sys.executable, "-c", code], env=env)


def test_one_training_job_at_a_time_even_from_another_process(home: Path, tmp_path: Path):
    ready = tmp_path / "ready"
    other = _holder_process(home, ready)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert other.poll() is None and time.monotonic() < deadline, "the holder did not start"
            time.sleep(0.05)
        job = _job(tmp_path / "d", engine_environment(), 2)
        with pytest.raises(TrainingBusyError) as busy:
            job.start()
        message = str(busy.value)
        assert "another training job is running: task braintumour" in message
        assert "20250101-120000" in message and str(other.pid) in message
        assert not job.run_folder.exists() and job.process is None  # nothing started
    finally:
        other.kill()
        other.wait()
    # its process is gone: the lock is stale and the next job takes it over
    lock = TrainingLock()
    assert lock.holder() is not None and not lock.holder().alive()
    lock.acquire(TASK, "run-b")
    assert lock.holder().task == TASK and lock.holder().pids == (os.getpid(),)
    second = TrainingLock()
    with pytest.raises(TrainingBusyError, match=f"task {TASK}, run run-b"):
        second.acquire("x", "run-c")  # held by this live process
    lock.release()
    assert not (home / "runs" / LOCK_FILE).exists()
    second.acquire("x", "run-c")
    second.release()


def test_a_lock_being_written_is_not_taken_over(home: Path):
    path = home / "runs" / LOCK_FILE
    path.parent.mkdir(parents=True)
    path.write_text("", encoding="utf-8")  # created, not written yet
    with pytest.raises(TrainingBusyError, match="starting"):
        TrainingLock().acquire(TASK, "run")
    old = time.time() - 3600
    os.utime(path, (old, old))  # garbage from long ago: taken over
    lock = TrainingLock()
    lock.acquire(TASK, "run")
    lock.release()


# --- the panel's decisions --------------------------------------------------------------------


class Version:  # the fields of segresmamba.weights.ModelVersion the panel reads
    def __init__(self, version, cases=3, steps=300, dice=0.812, date="2025-06-01T10:00:00"):
        self.version, self.cases, self.steps, self.dice, self.date = (
            version, cases, steps, dice, date,
        )  # fmt: skip


def test_teach_panel_decisions(tmp_path: Path):
    empty = TrainingSet(tmp_path / TASK, None, 0)
    state = teach_state(TASK, empty, [], "", missing=["a segmentation"])
    assert state.cases_text == f"no cases yet; they go to {tmp_path / TASK}"
    assert not state.add_enabled and "a segmentation" in state.add_tooltip
    assert not state.train_enabled and "Add cases" in state.train_tooltip
    assert not state.resume_enabled and state.version_items == [("no model versions yet", "")]
    three = TrainingSet(tmp_path / TASK, TASK, 3)
    new = teach_state(TASK, three, [], "")
    assert new.add_enabled and new.train_enabled and new.init_from is None
    assert new.train_text == "Train a new model" and "3 cases in" in new.cases_text
    versions = [Version(1), Version(2, cases=4)]
    tune = teach_state(TASK, three, versions, "")
    assert tune.init_from == TASK and tune.train_text == f"Fine-tune {TASK}"
    assert [value for _, value in tune.version_items] == ["", "2", "1"]
    assert (
        tune.version_items[0][0] == "newest (version 2: 4 cases, 300 steps, Dice 0.81, 2025-06-01)"
    )
    older = teach_state(TASK, three, versions, "1")  # going back: fine-tune from that version
    assert older.init_from == f"{TASK}@1"
    other = teach_state(
        "btcv", TrainingSet(tmp_path / "b", "btcv-own", 2), [], "", set_versions=versions
    )
    assert other.init_from == "btcv-own" and other.version_items == [("no model versions yet", "")]
    built_in = teach_state("btcv", TrainingSet(tmp_path / "b", "btcv", 2), [], "", built_in=True)
    assert not built_in.train_enabled and "built-in" in built_in.train_tooltip
    run = type("Run", (), {"folder": tmp_path / "20250101-120000", "task": TASK})()
    training = teach_state(TASK, three, versions, "", job="training", unfinished=run)
    assert training.train_text == "Cancel" and training.train_enabled
    assert not training.add_enabled and not training.resume_enabled
    busy = teach_state(TASK, three, versions, "", job="segmentation", unfinished=run)
    assert not busy.train_enabled and not busy.resume_enabled and not busy.add_enabled
    assert "segmentation" in busy.train_tooltip
    idle = teach_state(TASK, three, versions, "", unfinished=run)
    assert idle.resume_enabled and "20250101-120000" in idle.resume_tooltip
    broken = teach_state(TASK, TrainingSet(tmp_path, None, 0, "dataset.json: bad"), [], "")
    assert broken.cases_text == "dataset.json: bad" and not broken.train_enabled
    assert version_text(Version(3, None, None, None, None)) == "version 3"
    from segresmamba.datasets import AddedCase

    added = AddedCase("c1", tmp_path, ("edema", "necrosis"), True, 12, ("FLAIR", "T1Gd"), 3, False)
    assert added_case_text(added) == (
        "Added case c1: edema, necrosis; 12 unedited slice(s) left out (ignore). "
        "The training set holds 3 cases."
    )
    again = AddedCase("c1", tmp_path, ("edema",), False, 0, ("FLAIR", "T1Gd"), 3, True)
    assert added_case_text(again).startswith("Replaced case c1: edema.")


def test_apply_waits_while_training_runs():
    from segresmamba.tasks import get_task

    ready = ModelStatus("phantom", "m", "1", Path("m"), False, "m 1 (installed)")
    devices = {"cuda": None, "mps": None}
    task = get_task("phantom")
    idle = panel_state(task, [object()], ready, "cpu", devices, False)
    assert idle.apply_enabled and idle.apply_text == "Apply"
    busy = panel_state(task, [object()], ready, "cpu", devices, False, busy="training")
    assert not busy.apply_enabled and busy.apply_text == "Apply"
    assert "training" in busy.apply_tooltip and "one job at a time" in busy.apply_tooltip


def test_training_sets_and_what_a_case_is_added_for(dataset: Path, tmp_path: Path, home: Path):
    from segresmamba.tasks import get_task

    found = training_set(dataset)
    assert (found.task, found.cases, found.problem) == (TASK, 2, "")
    assert training_set(tmp_path / "none") == TrainingSet(tmp_path / "none", None, 0)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "dataset.json").write_text("{", encoding="utf-8")
    problem = training_set(broken).problem
    assert problem and "dataset.json" in problem and "\n" not in problem
    one = tmp_path / "one"  # the first case added: enough to train on (--fold all)
    (one / "labelsTr").mkdir(parents=True)
    (one / "imagesTr").mkdir()
    for name in ("imagesTr/BRATS13_001_0000.nii.gz", "imagesTr/BRATS13_001_0001.nii.gz"):
        (one / name).write_bytes((dataset / name).read_bytes())
    label = "labelsTr/BRATS13_001.nii.gz"
    (one / label).write_bytes((dataset / label).read_bytes())
    (one / "dataset.json").write_text(
        (dataset / "dataset.json").read_text(encoding="utf-8"), encoding="utf-8"
    )
    single = training_set(one)
    assert (single.task, single.cases, single.problem) == (TASK, 1, "")
    state = teach_state(TASK, single, [], "")
    assert state.cases_text == f"1 case in {one}" and state.train_enabled
    brats = get_task("brats")
    # the default folder of a built-in task is its own task's (the published name stays free)
    assert default_training_set("brats") == home / "datasets" / "brats-own"
    assert teach_task(brats, default_training_set("brats")) is brats
    assert teach_task(brats, dataset) == TASK  # a folder holding another task's set
    assert teach_task(brats, tmp_path / "liver-lesions") == "liver-lesions"  # a new task
    assert teach_task(brats, broken) is brats  # the writer names the folder's problem
    assert task_versions("brats") == [] and task_versions(None) == []


# --- real training runs -----------------------------------------------------------------------


def test_train_import_then_fine_tune_a_second_version(dataset: Path, slicer_like_env, home: Path):
    job = _job(dataset, slicer_like_env, 2)
    job.start()
    assert job.run_folder.parent == home / "runs" / TASK and (home / "runs" / LOCK_FILE).exists()
    events = job.wait(timeout=240)
    assert job.returncode == 0, "\n".join(job.log[-30:])
    progress = [e.progress for e in events if e.kind == "progress"]
    assert [p.step for p in progress] == [1, 2] and progress[-1].total_steps == 2
    assert progress[-1].eta_s is not None  # measured from step 1 on
    assert progress[-1].dice is not None and progress[-1].dice_on == "training cases"
    assert progress[0].describe().startswith("step 1 of 2 - loss ")
    assert [e.kind for e in events].count("finished") == 1 and events[-1].kind == "finished"
    assert job.imported == (TASK, 1)
    assert Path(job.model_path) == home / "models" / f"{TASK}.safetensors"
    assert read_run(job.run_folder).imported_version == 1
    assert not (home / "runs" / LOCK_FILE).exists()  # released
    assert unfinished_run(TASK) is None

    from segresmamba.weights import model_versions

    tune = _job(dataset, slicer_like_env, 2, init_from=TASK)
    tune.start()
    tune.wait(timeout=240)
    assert tune.returncode == 0, "\n".join(tune.log[-30:])
    training, importing = tune.commands
    assert training[training.index("--init-from") + 1] == TASK
    assert importing[-1] == str(tune.run_folder / "best.safetensors")
    assert tune.imported == (TASK, 2) and tune.run_folder != job.run_folder
    versions = model_versions(TASK)
    assert [v.version for v in versions] == [1, 2] and versions[-1].cases == 2
    assert task_versions(TASK) == versions
    assert segmentation_task(TASK) == TASK  # Apply: the newest
    older = segmentation_task(TASK, "1")  # Apply with version 1: -t mytumour@1, its labels
    assert older.name == f"{TASK}@1" and older.labels == versions[0].task_definition().labels
    assert _no_temporary_files(home) == []


def test_cancel_mid_run_then_resume_to_the_end_and_import(
    dataset: Path, slicer_like_env, home: Path
):
    from training.state import read_progress

    job = _job(dataset, slicer_like_env, 8, save_every=2)
    job.start()
    deadline = time.monotonic() + 240
    while not job.progress or job.progress.step < 3:  # the state of step 2 is saved
        job.poll()
        assert job.running, "\n".join(job.log[-30:])
        assert time.monotonic() < deadline, "no progress from training"
        time.sleep(0.02)
    started = time.monotonic()
    job.cancel()  # as on Cancel: returns at once, the UI thread never waits for the kill
    assert time.monotonic() - started < 0.5 and job.cancelled
    events = job.wait(timeout=30)  # the panel's timer polls until the tree has gone
    assert [e.kind for e in events if e.kind == "finished"] == ["finished"]
    assert not job.running and job.returncode != 0
    assert not (home / "runs" / LOCK_FILE).exists()
    folder = job.run_folder
    saved = read_progress(folder / "resume.safetensors")["progress"]["step"]
    assert 2 <= saved < 8, saved  # a complete state, not the end
    assert _no_temporary_files(folder) == []
    assert not (home / "models").exists() or not list((home / "models").iterdir())
    record = unfinished_run(TASK)
    assert record is not None and record.folder == folder and record.extra == job.record.extra

    resumed = TrainingJob(record, find_python(), slicer_like_env, threads=1)
    resumed.start()
    events = resumed.wait(timeout=240)
    assert resumed.returncode == 0, "\n".join(resumed.log[-30:])
    assert "--resume" in resumed.commands[0] and "--resume" not in job.commands[0]
    assert resumed.commands[0][-4:] == job.commands[0][-4:]  # the same options (steps, network)
    steps = [e.progress.step for e in events if e.kind == "progress"]
    assert steps and steps[0] == saved + 1 and steps[-1] == 8
    assert resumed.imported == (TASK, 1) and unfinished_run(TASK) is None
    assert _no_temporary_files(home) == []

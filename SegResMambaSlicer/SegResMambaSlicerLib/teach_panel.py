"""The *Teach* section of the module panel: add the case on screen to a training set, train or
fine-tune in the background, cancel, resume, and choose the model version Apply uses.

Widget glue, kept out of ``SegResMambaSlicer.py`` because the module file would otherwise grow
past ~650 lines. Every decision is Qt-free and tested with pytest (:func:`.panel.teach_state`,
:func:`.tasks.training_set`, :mod:`.training_job`); ``qt`` and ``slicer`` are imported inside
the methods only, so this file imports in plain Python and ``Testing/test_slicer_ui.py`` checks
the widget names it uses against the ``.ui`` file. The module widget keeps the one job slot
(segmentation, model import or training: one at a time) and hands training events here.
"""

from __future__ import annotations

from pathlib import Path

from .panel import added_case_text, teach_state, version_text
from .tasks import default_training_set, is_built_in, task_versions, training_set
from .training_job import TrainingJob
from .training_runs import TrainingBusyError, unfinished_run

__all__ = ["TeachSection"]


class TeachSection:
    """The *Teach* widgets of one module widget (``widget``: its ``ui``, parameter node,
    logic and job slot)."""

    def __init__(self, widget) -> None:
        self.widget = widget
        self.lastResult = None  # the segmentation Apply made last: what to learn from by default
        self._state = None
        self._versionValues: list[str] = []
        self._versionItems: list = []

    @property
    def ui(self):
        return self.widget.ui

    def setup(self) -> None:
        ui = self.ui
        ui.addCaseButton.connect("clicked(bool)", self.onAddCase)
        ui.trainButton.connect("clicked(bool)", self.onTrain)
        ui.resumeButton.connect("clicked(bool)", self.onResume)
        ui.trainingSetBrowseButton.connect("clicked(bool)", self.onBrowse)
        ui.modelVersionSelector.connect("activated(int)", self.onVersionChosen)

    # --- what the section works on -------------------------------------------------------

    def folder(self) -> Path:
        p = self.widget._parameterNode
        return Path(p.trainingSet) if p.trainingSet.strip() else default_training_set(p.task)

    def segmentation(self):
        """The chosen segmentation, else the output segmentation, else Apply's last result."""
        import slicer

        p = self.widget._parameterNode
        last = self.lastResult
        if last is not None and slicer.mrmlScene.GetNodeByID(last.GetID()) is not last:
            last = self.lastResult = None  # removed from the scene
        return p.teachSegmentation or p.outputSegmentation or last

    def _inputs(self, task) -> list:
        p = self.widget._parameterNode
        return [getattr(p, f"inputVolume{i}") for i in range(task.in_channels)]

    # --- the panel ---------------------------------------------------------------------------

    def update(self, job: str) -> None:
        """Copy the Lib's decisions (``teach_state``) into the widgets; ``job`` is the kind of
        job running in the module ("" none)."""
        p = self.widget._parameterNode
        task = self.widget.logic.task(p.task)
        ui = self.ui
        folder = self.folder()
        ui.trainingSetEdit.placeholderText = str(default_training_set(p.task))
        found = training_set(folder)
        set_task = found.task or folder.name
        missing = [f"the {s.name} volume" for s, n in zip(task.inputs, self._inputs(task)) if not n]
        if self.segmentation() is None:
            missing.append("a segmentation")
        versions = task_versions(p.task)
        self._state = state = teach_state(
            p.task,
            found,
            versions,
            p.modelVersion,
            set_versions=task_versions(set_task) if set_task != p.task else None,
            missing=missing,
            job=job,
            unfinished=unfinished_run(set_task),
            built_in=is_built_in(set_task),
        )
        ui.teachCasesLabel.text = state.cases_text
        for button, enabled, tip in (
            (ui.addCaseButton, state.add_enabled, state.add_tooltip),
            (ui.trainButton, state.train_enabled, state.train_tooltip),
            (ui.resumeButton, state.resume_enabled, state.resume_tooltip),
        ):
            button.enabled = enabled
            button.toolTip = tip
        ui.trainButton.text = state.train_text
        self._showVersions(state, versions)

    def _showVersions(self, state, versions) -> None:
        ui, p = self.ui, self.widget._parameterNode
        values = [value for _, value in state.version_items]
        if p.modelVersion not in values:  # another task, or a version that is gone
            p.modelVersion = ""
            return  # the parameter node's change calls update again
        if state.version_items != self._versionItems:
            ui.modelVersionSelector.clear()
            for text, _ in state.version_items:
                ui.modelVersionSelector.addItem(text)
            self._versionItems, self._versionValues = list(state.version_items), values
        ui.modelVersionSelector.currentIndex = values.index(p.modelVersion)
        ui.modelVersionSelector.enabled = state.version_enabled
        if p.modelVersion:  # the model line says which version Apply uses
            chosen = next(v for v in versions if str(v.version) == p.modelVersion)
            ui.modelLabel.text = f"{p.task}@{p.modelVersion} ({version_text(chosen)})"

    def onVersionChosen(self, index: int) -> None:
        if 0 <= index < len(self._versionValues):
            self.widget._parameterNode.modelVersion = self._versionValues[index]

    def onBrowse(self) -> None:
        import qt
        import slicer

        chosen = qt.QFileDialog.getExistingDirectory(
            slicer.util.mainWindow(), "Training set folder", str(self.folder())
        )
        if chosen:
            self.widget._parameterNode.trainingSet = chosen

    # --- actions -------------------------------------------------------------------------

    def onAddCase(self) -> None:
        """Write the case on screen into the training set; a case of the same id is replaced
        only after the user confirms."""
        import slicer

        from segresmamba.datasets import CaseExistsError

        from .tasks import teach_task
        from .teach import add_scene_case, default_case_id

        w = self.widget
        p = w._parameterNode
        task = w.logic.task(p.task)
        inputs = self._inputs(task)
        target = teach_task(task, self.folder())  # a new folder: a new task of that name
        arguments = (slicer.mrmlScene, target, inputs, self.segmentation())
        options = {"dataset_dir": self.folder(), "partial": p.partialLabels}
        try:
            try:
                with slicer.util.WaitCursor():
                    added = add_scene_case(*arguments, **options)
            except CaseExistsError:
                case = default_case_id(inputs[0])
                question = (
                    f"The training set {self.folder()} holds a case {case} already.\n"
                    "Replace it with the case on screen?"
                )
                if not slicer.util.confirmYesNoDisplay(question, windowTitle="SegResMamba"):
                    return
                with slicer.util.WaitCursor():
                    added = add_scene_case(*arguments, **options, replace=True)
        except Exception as error:  # a refusal of the engine: one line, nothing written
            self.ui.addCaseResultLabel.text = ""
            w._showError(" ".join(str(error).split()))
            return
        self.ui.addCaseResultLabel.text = added_case_text(added)
        self.ui.errorLabel.text = ""
        w.updateGui()

    def onTrain(self) -> None:
        """Train, or Cancel while training runs."""
        w = self.widget
        if isinstance(w._job, TrainingJob):
            job = w._job
            w._cancelJob()
            step = f" at step {job.progress.step}" if job.progress else ""
            self.ui.teachStatusLabel.text = (
                f"Cancelled{step}; Resume continues from the last saved step."
            )
            w.ui.statusLabel.text = self.ui.teachStatusLabel.text
            return
        state = self._state
        if state is None or not state.train_enabled:
            return
        found = training_set(self.folder())
        task_name = found.task or self.folder().name
        try:
            job = TrainingJob.new(
                found.folder,
                task_name,
                w.logic._python(),
                w.logic._environment(),
                device=self._device(),
                init_from=state.init_from,
                threads=self._threads(),
            )
        except Exception as error:  # e.g. PythonSlicer not found: say where it was looked for
            w._showError(" ".join(str(error).split()))
            return
        self._start(job, f"{job.describe()} on {found.cases} case(s)")

    def onResume(self) -> None:
        w = self.widget
        found = training_set(self.folder())
        record = unfinished_run(found.task or self.folder().name)
        if record is None or w._job is not None:
            return
        try:
            job = TrainingJob(record, w.logic._python(), w.logic._environment(), self._threads())
        except Exception as error:
            w._showError(" ".join(str(error).split()))
            return
        self._start(job, f"Resuming run {record.folder.name}: {job.describe()}")

    def _device(self) -> str:
        from . import dependencies

        w = self.widget
        return dependencies.engine_device(w._parameterNode.device, w._devices or {})

    @staticmethod
    def _threads() -> int:
        """Training leaves one core to Slicer's interface, as inference does."""
        from segresmamba.threads import available_cores

        return max(1, available_cores() - 1)

    def _start(self, job: TrainingJob, message: str) -> None:
        w = self.widget
        if w._job is not None:
            w._showError("another job is running in this module; wait for it or cancel it")
            return
        try:
            job.start()
        except TrainingBusyError as error:  # another Slicer trains: name its job
            w._showError(str(error))
            return
        except Exception as error:
            w._showError(" ".join(str(error).split()))
            return
        self.ui.teachProgressBar.value = 0
        self.ui.teachStatusLabel.text = f"{message}; the run folder is {job.run_folder}"
        w._start(job, message, "training")

    # --- events from the job ---------------------------------------------------------------

    def showEvent(self, event) -> None:
        """A training job's progress or status line, shown in the section too."""
        if event.kind == "progress":
            self.ui.teachProgressBar.value = int(1000 * event.progress.fraction)
            self.ui.teachStatusLabel.text = event.progress.describe()
        elif event.kind == "status":
            self.ui.teachStatusLabel.text = event.text

    def finish(self, job: TrainingJob) -> None:
        """Training and import have ended: select the new version, or say what went wrong."""
        w = self.widget
        if job.returncode == 0 and job.imported:
            name, version = job.imported
            w._showImportedTask(name)  # lists the task (new tasks too) and selects it
            w._parameterNode.model = ""
            w._parameterNode.modelVersion = ""  # the newest: the version just imported
            text = f"Version {version} of {name} is ready and selected: Apply uses it."
            self.ui.teachProgressBar.value = 1000
            self.ui.teachStatusLabel.text = text
            w.ui.statusLabel.text = text
            return
        w._showError(job.error_message or f"training stopped (exit code {job.returncode})")
        resumable = unfinished_run(job.record.task) is not None
        self.ui.teachStatusLabel.text = f"Training stopped: {job.error_message}" + (
            " Resume continues from the last saved step." if resumable else ""
        )

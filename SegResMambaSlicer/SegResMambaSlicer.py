"""SegResMamba in 3D Slicer: the module's face (Module, parameter node, Widget, Logic, Test).

Thin on purpose: inference runs in a child process (``SegResMambaSlicerLib.process``), volumes and
results are converted in ``SegResMambaSlicerLib.volumes``/``.segmentation``, and the engine
``segresmamba`` beside this file does the work, so everything but the widgets is tested outside
Slicer. Heavy imports (PyTorch, the engine) happen only after the dependency check.
"""

from __future__ import annotations

import logging
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from SegResMambaSlicerLib import dependencies
from SegResMambaSlicerLib.installer import install_and_report
from SegResMambaSlicerLib.jobs import JobList
from SegResMambaSlicerLib.panel import MAX_INPUTS
from SegResMambaSlicerLib.process import (
    EngineProcess,
    engine_environment,
    find_python,
    imported_model_path,
    imported_task_name,
    use_module_engine,
)
from SegResMambaSlicerLib.saved_choices import ChoiceGuard, extend_choices, repair_choices
from SegResMambaSlicerLib.tasks import task_names
from SegResMambaSlicerLib.teach_panel import TeachSection
from SegResMambaSlicerLib.training_job import TrainingJob
from SegResMambaSlicerLib.views import show_result, show_statistics

ENGINE_WARNING = use_module_engine()  # Slicer imports the engine the child processes run
TASK_NAMES = task_names() or ["btcv"]
DEVICE_CHOICES = ["auto", "cpu", "gpu"]
DEVICE_LABELS = {"auto": "auto", "cpu": "CPU", "gpu": "GPU"}
CHOICES = {"task": TASK_NAMES, "device": DEVICE_CHOICES}  # the parameters with a Choice


class SegResMambaSlicer(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "SegResMamba"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["SegResMambaSlicer contributors"]
        self.parent.helpText = (
            "Segment CT and brain MRI with SegResMamba, a memory-efficient Mamba-based 3D network: "
            "13 abdominal organs (BTCV), spleen, and brain tumour sub-regions from four MRI "
            "sequences (BraTS). Runs on a GPU or, with fast mode, on a CPU; the UI stays usable "
            "and Apply turns into Cancel while it runs. Needs 3D Slicer 5.10 or later."
        )
        self.parent.acknowledgementText = (
            "SegResMamba (Das et al., 2025). Built on MONAI, PyTorch and 3D Slicer; the module "
            "layout follows Slicer's scripted module template."
        )


@parameterNodeWrapper
class SegResMambaSlicerParameterNode:
    """Every choice the user makes, saved with the scene so reloading it restores them."""

    task: Annotated[str, Choice(TASK_NAMES)] = TASK_NAMES[0]
    inputVolume0: vtkMRMLScalarVolumeNode
    inputVolume1: vtkMRMLScalarVolumeNode
    inputVolume2: vtkMRMLScalarVolumeNode
    inputVolume3: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    device: Annotated[str, Choice(DEVICE_CHOICES)] = "auto"
    fast: bool = False
    bratsLabelmap: bool = False
    model: str = ""  # a checkpoint path or model name; empty: the task's default model
    modelVersion: str = ""  # a user task's version K for Apply; empty: the newest
    trainingSet: str = ""  # the training set folder; empty: the task's own in the user folder
    teachSegmentation: vtkMRMLSegmentationNode  # what Add to training set learns from
    partialLabels: bool = False  # only the edited slices are labelled: the rest is "ignore"


class SegResMambaSlicerWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = (
            None  # a SegmentationJob, an EngineProcess (model download/import), a TrainingJob
        )
        self._jobKind = ""  # what self._job does, for messages: "segmentation", "training", ...
        self.teach = TeachSection(self)  # the Teach section's widgets (SegResMambaSlicerLib)
        self._ready = False  # the engine's Python packages are installed
        self._devices = None
        self._shownTask = None  # the task the input selectors were filled for
        self._choiceGuard = None  # keeps a loaded scene's task among TASK_NAMES
        self._timer = qt.QTimer()
        self._timer.setInterval(200)
        self._timer.timeout.connect(self._poll)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SegResMambaSlicer.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SegResMambaSlicerLogic()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.NodeAddedEvent, self.onNodeAdded)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.installDependenciesButton.connect("clicked(bool)", self.onInstallDependencies)
        self.ui.downloadModelButton.connect("clicked(bool)", self.onDownloadModel)
        self.ui.importModelButton.connect("clicked(bool)", self.onImportModel)
        self._statistics = []  # the last result's per-segment statistics rows
        self.saveStatisticsButton = qt.QPushButton("Save statistics...")
        self.saveStatisticsButton.toolTip = "Save the last result's statistics as CSV or JSON"
        self.saveStatisticsButton.enabled = False
        self.saveStatisticsButton.connect("clicked(bool)", self.onSaveStatistics)
        self.layout.addWidget(self.saveStatisticsButton)
        self.teach.setup()
        self.refreshDependencies()
        self.initializeParameterNode()
        if ENGINE_WARNING:  # a warning, not a failure: runs use the module's own copy
            self.ui.errorLabel.text = ENGINE_WARNING
            logging.warning(f"SegResMamba: {ENGINE_WARNING}")

    def cleanup(self) -> None:
        self._cancelJob()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self._disconnect()

    def _disconnect(self) -> None:
        if self._choiceGuard is not None:
            self._choiceGuard.remove()
            self._choiceGuard = None
        if self._parameterNode:
            if self._parameterNodeGuiTag is not None:
                self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
                self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGui)

    def onSceneStartClose(self, caller, event) -> None:
        self._cancelJob()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def onNodeAdded(self, caller, event) -> None:
        qt.QTimer.singleShot(0, self.autoFillInputs)  # after the loader has named the node

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        self.autoFillInputs()
        if self.logic.notice:  # the scene named a task this computer lacks
            self.ui.statusLabel.text = self.logic.notice

    def setParameterNode(self, parameterNode) -> None:
        self._disconnect()
        self._parameterNode = parameterNode
        self._shownTask = None  # keep the inputs a loaded scene restores
        if self._parameterNode:
            self._choiceGuard = ChoiceGuard(
                parameterNode.parameterNode, CHOICES, self._showChoiceNotice
            )
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGui)
            self._labelChoices()
        self.updateGui()

    def _labelChoices(self) -> None:
        """connectGui fills the combo boxes with the raw choices; show titles instead."""
        for index, name in enumerate(TASK_NAMES):
            title = self.logic.taskTitle(name) if self._ready else name
            self.ui.taskSelector.setItemText(index, title)
        for index, name in enumerate(DEVICE_CHOICES):
            self.ui.deviceSelector.setItemText(index, DEVICE_LABELS[name])

    def autoFillInputs(self) -> None:
        """Fill empty input selectors from the loaded volumes' names (BraTS: t1c -> T1Gd ...)."""
        if self._parameterNode and self._ready:
            from SegResMambaSlicerLib.volumes import fill_empty_inputs

            task = self.logic.task(self._parameterNode.task)
            fill_empty_inputs(self._parameterNode, task, slicer.mrmlScene)

    def updateGui(self, caller=None, event=None) -> None:
        """Copy the Lib's decisions (``panel_state``) into the widgets."""
        p = self._parameterNode
        training = self._jobKind == "training"
        running = self._job is not None and not training  # Apply cancels it
        if not p or not self._ready:
            self.ui.applyButton.text = "Cancel" if running else "Apply"
            self.ui.applyButton.enabled = running
            return
        if self._shownTask not in (None, p.task):  # another task needs other images
            self._shownTask = p.task
            for index in range(MAX_INPUTS):
                setattr(p, f"inputVolume{index}", None)
            self.autoFillInputs()
        self._shownTask = p.task
        from SegResMambaSlicerLib.dicom_check import dicom_gap_warnings
        from SegResMambaSlicerLib.logic import modality_warnings
        from SegResMambaSlicerLib.panel import panel_state
        from SegResMambaSlicerLib.tasks import model_status

        task = self.logic.task(p.task)
        inputs = [getattr(p, f"inputVolume{i}") for i in range(MAX_INPUTS)]
        model = model_status(task.name, p.model or None)
        warnings = modality_warnings(task, inputs[: task.in_channels])
        warnings += dicom_gap_warnings(inputs[: task.in_channels])  # a missing DICOM slice
        busy = "training" if training else ""
        state = panel_state(task, inputs, model, p.device, self._devices, running, warnings, busy)
        self.ui.taskDescriptionLabel.text = state.description
        self.ui.taskInputsLabel.text = state.inputs_text
        for index, (label, tip) in enumerate(zip(state.input_labels, state.input_tooltips)):
            row = (
                getattr(self.ui, f"inputLabel{index}"),
                getattr(self.ui, f"inputSelector{index}"),
            )
            for widget in row:
                widget.visible = label is not None
                widget.toolTip = tip
            if label is not None:
                row[0].text = label
        self.ui.bratsLabelmapCheckBox.visible = state.brats_option
        self.ui.modelLabel.text = state.model_text
        self.ui.downloadModelButton.enabled = state.can_download
        self.ui.importModelButton.enabled = self._job is None
        self.ui.deviceInfoLabel.text = state.device_text
        self.ui.inputWarningLabel.text = state.warning_text
        self.ui.inputWarningLabel.visible = bool(state.warning_text)
        self.ui.applyButton.text = state.apply_text
        self.ui.applyButton.enabled = state.apply_enabled
        self.ui.applyButton.toolTip = state.apply_tooltip
        self.teach.update(self._jobKind if self._job is not None else "")

    def refreshDependencies(self) -> None:
        missing = dependencies.find_missing()
        self._ready = not missing
        self.ui.installDependenciesButton.visible = bool(missing)
        self.ui.dependenciesLabel.visible = bool(missing)
        self.ui.inputsCollapsibleButton.enabled = self._ready
        self.ui.optionsCollapsibleButton.enabled = self._ready
        self.ui.teachCollapsibleButton.enabled = self._ready
        if missing:
            names = ", ".join(m.requirement.distribution for m in missing)
            self.ui.dependenciesLabel.text = f"SegResMamba needs Python packages first: {names}."
        else:
            self._devices = dependencies.describe_devices()

    def onInstallDependencies(self) -> None:
        plan = dependencies.install_plan(dependencies.find_missing())
        if plan.empty and plan.not_installable:  # part of Slicer: never replaced by pip
            slicer.util.errorDisplay(plan.summary(), windowTitle="SegResMamba")
            return
        if plan.empty or not slicer.util.confirmOkCancelDisplay(
            plan.summary(dependencies.pytorch_utils_available()),
            "SegResMamba: install Python packages",
        ):
            return
        try:
            if install_and_report(plan):  # one error dialog on failure (Slicer 5.11+ shows pip's)
                from SegResMambaSlicerLib.warmup import start_background_warmup

                self._warmup = start_background_warmup()  # the first Apply does not compile
        finally:
            self.refreshDependencies()
            if self._parameterNode:
                self._labelChoices()
            self.autoFillInputs()
            self.updateGui()

    def onApplyButton(self) -> None:
        if self._jobKind == "training":  # Apply is disabled then; one job at a time
            return
        if self._job is not None:
            self._cancelJob()
            self.ui.statusLabel.text = "Cancelled; the scene is unchanged."
            return
        from SegResMambaSlicerLib.tasks import segmentation_task

        p = self._parameterNode
        task = self.logic.task(p.task)
        try:
            device = dependencies.engine_device(p.device, self._devices)
            self._start(
                self.logic.startSegmentation(
                    segmentation_task(p.task, p.modelVersion),  # NAME@K: an older version
                    [getattr(p, f"inputVolume{i}") for i in range(task.in_channels)],
                    p.outputSegmentation,
                    model=None if p.modelVersion else (p.model or None),
                    device=device,
                    fast=p.fast,
                    brats_labelmap=p.bratsLabelmap,
                ),
                f"Segmenting ({task.title}) on {device}...",
            )
        except Exception as error:
            self._showError(" ".join(str(error).split()))

    def onDownloadModel(self) -> None:
        from SegResMambaSlicerLib.tasks import model_status

        status = model_status(self._parameterNode.task, self._parameterNode.model or None)
        try:
            job = self.logic.modelCommand("download", status.name)
        except Exception as error:  # e.g. PythonSlicer not found: say where it was looked for
            self._showError(" ".join(str(error).split()))
            return
        self._start(job, f"Downloading {status.name}...", "the model download")

    def onImportModel(self) -> None:
        path = qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(),
            "Import a SegResMamba model",
            "",
            "Models (*.safetensors *.zip)",
        )
        if path:
            try:
                job = self.logic.modelCommand("import", path)
            except Exception as error:
                self._showError(" ".join(str(error).split()))
                return
            self._start(job, f"Importing {path}...", "the model import")

    def _showChoiceNotice(self, message: str) -> None:  # logged by the guard
        self.ui.statusLabel.text = message

    def _start(self, job, message: str, kind: str = "segmentation") -> None:
        self._job = self.logic.jobs.add(job)  # stopped when Slicer quits
        self._jobKind = kind
        self.ui.errorLabel.text = ""
        self.ui.logText.appendPlainText(message)
        self.ui.statusLabel.text = message
        self.ui.progressBar.value = 0
        self._timer.start()
        self.updateGui()

    def _poll(self) -> None:
        """Called by the timer: forward the child's output, finish when it has ended, and
        complete the kill of cancelled jobs."""
        self.logic.jobs.tick()
        job = self._job
        if job is None:
            if not self.logic.jobs.stopping:
                self._timer.stop()
            return
        for event in job.poll():
            if event.kind == "log":
                self.ui.logText.appendPlainText(event.text)
            elif event.kind == "status":
                self.ui.statusLabel.text = event.text
            elif event.kind == "progress":
                self.ui.progressBar.value = int(1000 * event.progress.fraction)
                self.ui.statusLabel.text = event.progress.describe()
            if isinstance(job, TrainingJob):
                self.teach.showEvent(event)
            if event.kind == "finished":
                self._finish(job)
                return

    def _finish(self, job) -> None:
        self._timer.stop()
        self._job, self._jobKind = None, ""
        if isinstance(job, TrainingJob):  # trained and imported, or stopped
            self.teach.finish(job)
        elif isinstance(job, EngineProcess):  # model download or import
            if job.returncode == 0:
                self.ui.statusLabel.text = job.log[-1] if job.log else "Done."
                own_task = imported_task_name(job.log)  # its newest version is the import
                model = "" if own_task else imported_model_path(job.log)
                self._parameterNode.model = model or self._parameterNode.model
                self._parameterNode.modelVersion = ""
                self._showImportedTask(own_task)
            else:
                self._showError(job.error_message or f"exit code {job.returncode}")
        else:
            try:
                node = job.finish()
            except Exception as error:  # e.g. an unreadable result: say so, keep the UI usable
                node, job.error = None, f"could not import the result: {error}"
            if node is None:
                self._showError(job.error)
            else:
                self.logic.showResult(node, job.input_nodes[0])
                self.teach.lastResult = node  # what Add to training set learns from by default
                self._statistics = self.logic.showStatistics(node, job.input_nodes[0], job.task)
                self.saveStatisticsButton.enabled = bool(self._statistics)
                self.ui.progressBar.value = 1000
                self.ui.statusLabel.text = f"Done: {node.GetName()}"
        self.updateGui()

    def onSaveStatistics(self) -> None:
        from SegResMambaSlicerLib.statistics import save_statistics

        path = qt.QFileDialog.getSaveFileName(
            None, "Save statistics", "statistics.csv", "CSV (*.csv);;JSON (*.json)"
        )
        if path:
            try:
                save_statistics(self._statistics, path)
            except Exception as error:  # e.g. a name without .csv/.json, an unwritable folder
                self._showError(str(error))

    def _showImportedTask(self, name: str | None) -> None:
        """A model of the user's own task was imported: list its task and select it."""
        if not name:
            return
        extend_choices(TASK_NAMES, task_names())  # the Choice's own list
        self.setParameterNode(self._parameterNode)  # reconnect: the selector gets the new names
        for index in range(self.ui.taskSelector.count, len(TASK_NAMES)):
            self.ui.taskSelector.addItem(TASK_NAMES[index])
        self._labelChoices()
        try:
            self._parameterNode.task = name
        except ValueError as error:  # a Slicer whose Choice copied the list at load
            logging.warning(f"SegResMamba: restart Slicer to select task {name}: {error}")

    def _cancelJob(self) -> None:
        if self._job is not None:  # at once; the timer completes the kill (training: waits)
            self.logic.jobs.cancel(self._job)
            self._job, self._jobKind = None, ""
            self.ui.progressBar.value = 0
            self.updateGui()

    def _showError(self, message: str) -> None:
        """The one-line message under the button; the full log stays in the log pane."""
        self.ui.errorLabel.text = message
        self.ui.statusLabel.text = "Failed."
        self.ui.logCollapsibleButton.collapsed = False
        logging.error(f"SegResMamba: {message}")


class SegResMambaSlicerLogic(ScriptedLoadableModuleLogic):
    """What the module does, callable from scripts without the widget."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.jobs = JobList()  # what this logic started, stopped when Slicer quits
        self.notice = ""  # what getParameterNode changed in a loaded scene, for the user
        slicer.app.aboutToQuit.connect(self.jobs.stop_all)

    def getParameterNode(self):
        """The module's parameters; a saved task this computer lacks is replaced (``notice``)."""
        node = super().getParameterNode()
        extend_choices(TASK_NAMES, task_names())  # imported since Slicer started
        self.notice = "; ".join(repair_choices(node, CHOICES))  # and logged
        return SegResMambaSlicerParameterNode(node)

    def task(self, name: str):
        from segresmamba.tasks import get_task

        return get_task(name)

    def taskTitle(self, name: str) -> str:
        return self.task(name).title

    def _environment(self):
        startup = getattr(slicer.util, "startupEnvironment", None)
        return engine_environment(startup() if startup else None)

    def _python(self) -> str:
        return find_python(slicer.app.slicerHome)

    def process(self, task, inputs, output=None, **options):
        """Segment synchronously in Slicer's own process (scripts); returns the segmentation.
        ``options``: model, device, fast, overlap, brats_labelmap (see ``segment_volumes``)."""
        from SegResMambaSlicerLib.logic import segment_volumes

        node = segment_volumes(slicer.mrmlScene, task, inputs, output, **options)
        self.showResult(node, inputs[0])
        return node

    def startSegmentation(self, task, inputs, output=None, **options):
        """Start the engine in a child process and return the job; the caller polls it and
        calls ``finish()`` on its "finished" event. ``options`` as for ``SegmentationJob``."""
        from SegResMambaSlicerLib.dicom_check import dicom_gap_warnings
        from SegResMambaSlicerLib.logic import SegmentationJob

        for warning in dicom_gap_warnings(inputs):  # Slicer's DICOM loader only logs it
            logging.warning(f"SegResMamba: {warning}")
        job = SegmentationJob(
            slicer.mrmlScene,
            task,
            inputs,
            output,
            **options,
            python=self._python(),
            environment=self._environment(),
        )
        job.start()
        return self.jobs.add(job)

    def modelCommand(self, action: str, argument: str) -> EngineProcess:
        """``segresmamba models download NAME`` or ``models import FILE`` in a child process."""
        command = [self._python(), "-m", "segresmamba", "models", action, str(argument)]
        process = EngineProcess(command, env=self._environment())
        process.start()
        return self.jobs.add(process)

    def showStatistics(self, node, reference, task) -> list:
        """The result's statistics table beside the views; its rows, [] when unavailable."""
        return show_statistics(node, reference, task)

    def showResult(self, node, reference) -> None:
        """Show the segmentation over its input in the slice views and as surfaces in 3D."""
        show_result(node, reference)


class SegResMambaSlicerTest(ScriptedLoadableModuleTest):
    """End to end on the synthetic phantom with the bundled demo model, on the CPU: segment
    count, names, the CT's exact grid and mean Dice >= 0.9 (the same check pytest runs)."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_phantom_end_to_end()

    def test_phantom_end_to_end(self) -> None:
        from SegResMambaSlicerLib.selftest import self_test_blocker, self_test_skip_reason

        skip = self_test_skip_reason(slicer.app.testingEnabled())  # CTest without the packages
        if skip:
            self.skipTest(skip)
        blocker = self_test_blocker()  # a failure: Reload and Test shows a skip as one
        if blocker:
            self.delayDisplay(blocker)
            self.fail(blocker)
        from SegResMambaSlicerLib.selftest import check_phantom

        self.delayDisplay("Segmenting the phantom with the demo model")
        result = check_phantom(slicer.mrmlScene, device="cpu", min_dice=0.9)
        self.delayDisplay(result.report())
        self.assertTrue(result.ok, result.report())

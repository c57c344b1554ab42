"""What the module panel shows for the current choices, decided without Qt.

The widget only copies a :class:`PanelState` into its labels and buttons; the decisions (which
input rows are visible and what they are called, whether Apply may run, what the model and device
lines say) live here, where pytest can check them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .dependencies import device_text, engine_device, scan_backend_text
from .tasks import ModelStatus, task_inputs_text

__all__ = [
    "MAX_INPUTS",
    "PanelState",
    "TeachState",
    "added_case_text",
    "cases_line",
    "panel_state",
    "teach_state",
    "version_items",
    "version_text",
]

MAX_INPUTS = 4
"""Input selectors in the UI: the most any task takes (BraTS: FLAIR, T1, T1Gd, T2)."""


@dataclass(frozen=True)
class PanelState:
    """Texts, visibility and enabled states of the panel's widgets."""

    description: str
    inputs_text: str
    input_labels: list[str | None] = field(default_factory=list)  # None: row hidden
    input_tooltips: list[str] = field(default_factory=list)
    brats_option: bool = False
    model_text: str = ""
    can_download: bool = False
    device_text: str = ""
    warning_text: str = ""  # the engine's modality warnings for the selected volumes
    apply_text: str = "Apply"
    apply_enabled: bool = False
    apply_tooltip: str = ""


def panel_state(
    task,
    inputs: Sequence[object | None],
    model: ModelStatus,
    device_choice: str,
    devices: dict,
    running: bool,
    warnings: Sequence[str] = (),
    busy: str = "",
) -> PanelState:
    """The panel for ``task`` with these selected ``inputs`` (None where empty), the model line,
    the device choice ("auto", "cpu", "gpu"), whether a segmentation is in progress, the
    modality ``warnings`` for the inputs (shown, never blocking Apply) and ``busy``, the other
    job running in the module ("training", "the import"; one job at a time)."""
    labels: list[str | None] = [None] * MAX_INPUTS
    tooltips = [""] * MAX_INPUTS
    for index, spec in enumerate(task.inputs[:MAX_INPUTS]):
        labels[index] = f"{spec.name}:"
        tooltips[index] = spec.description
    try:
        device = engine_device(device_choice, devices)
    except RuntimeError as error:
        device, device_line = "cpu", str(error)
    else:
        device_line = device_text(device_choice, devices)
    chosen = list(inputs[: task.in_channels])
    missing = [spec.name for spec, node in zip(task.inputs, chosen) if node is None]
    missing += [spec.name for spec in task.inputs[len(chosen) :]]
    usable_model = model.installed or model.downloadable
    if running:
        enabled, tooltip = True, "Cancel the run; the scene stays as it was"
    elif busy:
        enabled, tooltip = False, f"Wait until {busy} has finished (one job at a time)"
    elif missing:
        enabled, tooltip = False, f"Select the {', '.join(missing)} volume(s)"
    elif not usable_model:
        enabled, tooltip = False, "Download or import a model for this task first"
    elif device_choice == "gpu" and device == "cpu":
        enabled, tooltip = False, device_line
    else:
        enabled, tooltip = True, "Segment the inputs"
    return PanelState(
        description=task.description,
        inputs_text=task_inputs_text(task),
        input_labels=labels,
        input_tooltips=tooltips,
        brats_option=task.output == "sigmoid",
        model_text=model.text,
        can_download=model.downloadable and not running and not busy,
        device_text=f"{device_line}\n{scan_backend_text(_runs_on(device, devices))}",
        apply_text="Cancel" if running else "Apply",
        apply_enabled=enabled,
        apply_tooltip=tooltip,
        warning_text="\n".join(f"Warning: {w}" for w in warnings),
    )


def _runs_on(device: str, devices: dict) -> str:
    """The device kind the scan will see: "auto" means CUDA when there is a CUDA GPU."""
    if device == "cuda" or (device == "auto" and devices.get("cuda")):
        return "cuda"
    return "cpu"


@dataclass(frozen=True)
class TeachState:
    """Texts and enabled states of the *Teach* section's widgets."""

    cases_text: str
    add_enabled: bool
    add_tooltip: str
    train_text: str
    train_enabled: bool
    train_tooltip: str
    init_from: str | None  # what Train fine-tunes (NAME or NAME@K); None: a new model
    resume_enabled: bool
    resume_tooltip: str
    version_items: list[tuple[str, str]]  # (text, value) for the version selector; "" newest
    version_enabled: bool


def version_text(version) -> str:
    """``version 2: 5 cases, 300 steps, Dice 0.81, 2025-06-01``: what a version was taught."""
    facts = []
    if version.cases is not None:
        facts.append(f"{version.cases} case{'s' * (version.cases != 1)}")
    if version.steps is not None:
        facts.append(f"{version.steps} steps")
    if version.dice is not None:
        facts.append(f"Dice {version.dice:.2f}")
    if version.date:
        facts.append(str(version.date)[:10])
    return f"version {version.version}" + (f": {', '.join(facts)}" if facts else "")


def version_items(versions: Sequence) -> list[tuple[str, str]]:
    """The version selector's (text, value) items, newest first; value "" is "the newest"."""
    if not versions:
        return [("no model versions yet", "")]
    items = [(f"newest ({version_text(versions[-1])})", "")]
    return items + [(version_text(v), str(v.version)) for v in reversed(versions)]


def cases_line(training_set) -> str:
    """``3 cases in FOLDER``, and the reader's problem on a second line (e.g. a damaged case)."""
    count, folder, problem = training_set.cases, training_set.folder, training_set.problem
    text = f"{count} case{'s' * (count != 1)} in {folder}"
    if not count:
        text = "" if problem else f"no cases yet; they go to {folder}"
    return f"{text}\n{problem}".strip() if problem else text


def teach_state(
    task_name: str,
    training_set,
    versions: Sequence,
    selected_version: str,
    *,
    set_versions: Sequence | None = None,
    missing: Sequence[str] = (),
    job: str = "",
    unfinished=None,
    built_in: bool = False,
) -> TeachState:
    """The *Teach* section for the selected task ``task_name``.

    ``training_set`` is a :class:`.tasks.TrainingSet`; ``versions`` the imported versions of the
    selected task (oldest first) and ``selected_version`` the one chosen for Apply ("" newest);
    ``set_versions`` those of the training set's task when it is another one (Train fine-tunes
    its newest, or the selected version when it is the same task; no versions: a new model);
    ``missing`` what *Add to training set* still needs (inputs, a segmentation); ``job`` the
    kind of job running in the module ("training", "segmenting", ...; "" none); ``unfinished``
    a run *Resume* would continue; ``built_in`` whether the set's task is a built-in task,
    whose name cannot take a model of the user's.
    """
    items = version_items(versions)
    name = training_set.task or task_name
    count = training_set.cases
    cases_text = cases_line(training_set)
    same_task = name == task_name
    if set_versions is None or same_task:
        set_versions = versions if same_task else []
    init_from = None
    if set_versions:
        chosen = selected_version if same_task else ""
        init_from = f"{name}@{chosen}" if chosen else name
    train_text = f"Fine-tune {init_from}" if init_from else "Train a new model"
    if job == "training":
        return TeachState(
            cases_text, False, "Training uses the training set; add cases when it has ended",
            "Cancel", True, "Stop training now; Resume continues from the last saved step",
            init_from, False, "Training is running", items, False,
        )  # fmt: skip
    if job:
        wait = f"Wait until {job} has finished (one job at a time)"
        return TeachState(
            cases_text, False, wait, train_text, False, wait, init_from, False, wait, items, False
        )
    add_tip = f"Select {' and '.join(missing)} first" if missing else (
        f"Write the inputs and the segmentation as a case of {training_set.folder}"
    )  # fmt: skip
    if training_set.problem:
        train_ok, train_tip = False, training_set.problem
    elif not count:
        train_ok, train_tip = False, "Add cases to the training set first"
    elif built_in:
        train_ok, train_tip = (
            False,
            (
                f"{name} is a built-in task: give the training set a name of its own "
                '("name" in its dataset.json) to train a model of yours'
            ),
        )
    else:
        what = f"fine-tune {init_from}" if init_from else f"train a new model for {name}"
        train_ok, train_tip = True, f"In the background: {what} on {count} case(s)"
    resume_tip = (
        f"Continue run {unfinished.folder.name} of {unfinished.task} from its last saved step"
        if unfinished is not None
        else "No unfinished run of this task"
    )
    return TeachState(
        cases_text, not missing, add_tip, train_text, train_ok, train_tip, init_from,
        unfinished is not None, resume_tip, items, bool(versions),
    )  # fmt: skip


def added_case_text(added) -> str:
    """The one-line report of *Add to training set* (an engine ``AddedCase``)."""
    verb = "Replaced" if added.replaced else "Added"
    text = f"{verb} case {added.case_id}: {', '.join(added.label_names) or 'background only'}"
    if added.ignore_written:
        text += f"; {added.ignored_slices} unedited slice(s) left out (ignore)"
    return f"{text}. The training set holds {added.cases} case{'s' * (added.cases != 1)}."

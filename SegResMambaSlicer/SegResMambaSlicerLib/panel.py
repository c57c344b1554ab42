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

__all__ = ["MAX_INPUTS", "PanelState", "panel_state"]

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
) -> PanelState:
    """The panel for ``task`` with these selected ``inputs`` (None where empty), the model line,
    the device choice ("auto", "cpu", "gpu"), whether a run is in progress and the modality
    ``warnings`` for the inputs (shown, never blocking Apply)."""
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
        can_download=model.downloadable and not running,
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

"""Choices a scene saved that this computer cannot offer, e.g. a task imported elsewhere.

The parameter node wrapper's combo box connector raises ``ValueError("Unable to find value ...
in choices")`` (``guiConnectors.py`` in Slicer 5.10.0 and 5.12.3) when the node holds a value
outside its ``Choice``; the panel's setup, enter and scene-close handlers then fail. So the raw
parameter node is repaired before the GUI is connected (:func:`repair_choices`), and again
whenever it changes (:class:`ChoiceGuard`): loading a scene copies its saved parameter node into
the module's existing one, and the guard's observer runs before the connectors'. Works on the
raw ``vtkMRMLScriptedModuleNode``, so it is tested with real MRML.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import vtk

__all__ = ["ChoiceGuard", "extend_choices", "repair_choices"]

GUARD_PRIORITY = 100.0
"""Above the wrapper's own observers (priority 0), so they never see the unknown value."""


def extend_choices(choices: list[str], names: Sequence[str]) -> None:
    """Add ``names`` missing from ``choices`` in place: a ``Choice`` keeps the list it was given,
    so tasks imported since Slicer started become valid choices."""
    choices.extend(name for name in names if name not in choices)


def repair_choices(parameter_node, choices: Mapping[str, Sequence[str]]) -> list[str]:
    """Replace each saved value that is not among its choices with the first choice; returns a
    message per replacement, for the user (each is logged as a warning too)."""
    messages = []
    for name, allowed in choices.items():
        if not allowed or not parameter_node.HasParameter(name):
            continue
        saved = parameter_node.GetParameter(name)
        if saved in allowed:
            continue
        parameter_node.SetParameter(name, allowed[0])
        messages.append(
            f"the scene names {name} {saved!r}, which this computer does not have (a task "
            f"imported elsewhere?); {allowed[0]!r} is selected instead"
        )
        logging.warning(f"SegResMamba: {messages[-1]}")
    return messages


class ChoiceGuard:
    """Keeps ``parameter_node``'s choice parameters valid from now on; ``report`` gets each
    message. :meth:`remove` before the node is dropped."""

    def __init__(
        self,
        parameter_node,
        choices: Mapping[str, Sequence[str]],
        report: Callable[[str], None],
    ) -> None:
        self.node = parameter_node
        self.choices = choices
        self.report = report
        self._tag = parameter_node.AddObserver(
            vtk.vtkCommand.ModifiedEvent, self._check, GUARD_PRIORITY
        )

    def _check(self, caller, event) -> None:
        for message in repair_choices(self.node, self.choices):
            self.report(message)

    def remove(self) -> None:
        if self._tag is not None:
            self.node.RemoveObserver(self._tag)
            self._tag = None

"""A real MRML scene with Slicer's module logics, without the Slicer application.

For tests and scripts that use the ``slicer-core`` wheel (Slicer's MRML and logic libraries
without Qt): it wires the scene, the application logic and the Colors, Volumes and
Segmentations logics the way the application does, and can publish them as
``slicer.mrmlScene``/``slicer.modules`` for ``slicer.util`` helpers. Inside Slicer, use the
application's scene instead.
"""

from __future__ import annotations

import tempfile
import types
from dataclasses import dataclass
from pathlib import Path

__all__ = ["HeadlessSlicer", "load_volume"]


@dataclass
class HeadlessSlicer:
    """A scene plus the logics that the module's code and ``slicer.util`` expect."""

    scene: object
    application: object
    colors: object
    volumes: object
    segmentations: object

    @classmethod
    def create(cls) -> HeadlessSlicer:
        import slicer

        scene = slicer.vtkMRMLScene()
        application = slicer.vtkSlicerApplicationLogic()
        application.SetMRMLScene(scene)
        # slicer-core ships no colour files; an empty share folder lets the colour logic make
        # its built-in tables (Labels, Grey, ...) quietly, as in the application
        home = tempfile.TemporaryDirectory(prefix="slicer-home-")
        share = "share/Slicer"
        (Path(home.name) / share / "ColorFiles").mkdir(parents=True)
        application.SetHomeDirectory(home.name)
        application.SetShareDirectory(share)
        logics = {}
        for name, logic_class in (
            ("Colors", slicer.vtkSlicerColorLogic),
            ("Volumes", slicer.vtkSlicerVolumesLogic),
            ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
        ):
            logic = logic_class()
            logic.SetMRMLApplicationLogic(application)
            logic.SetMRMLScene(scene)
            application.SetModuleLogic(name, logic)
            logics[name] = logic
        logics["Colors"].AddDefaultColorNodes()
        home.cleanup()
        from .segmentation import register_segmentation_logic

        register_segmentation_logic(scene, logics["Segmentations"])
        return cls(scene, application, logics["Colors"], logics["Volumes"], logics["Segmentations"])

    def publish(self) -> None:
        """Set ``slicer.mrmlScene`` and ``slicer.modules`` (as Slicer does) to this scene and
        its logics, for ``slicer.util`` helpers and code written for the application."""
        import slicer

        def module(logic):
            return types.SimpleNamespace(logic=lambda: logic)

        slicer.mrmlScene = self.scene
        slicer.modules = types.SimpleNamespace(
            colors=module(self.colors),
            volumes=module(self.volumes),
            segmentations=module(self.segmentations),
        )

    def withdraw(self) -> None:
        """Undo :meth:`publish`, so later code does not see a stale scene."""
        import slicer

        for name in ("mrmlScene", "modules"):
            if hasattr(slicer, name):
                delattr(slicer, name)


def load_volume(headless: HeadlessSlicer, path: str | Path, name: str | None = None):
    """Load a scalar volume file through Slicer's volumes logic and storage nodes."""
    path = Path(path)
    node_name = name or path.name.split(".")[0]
    node = headless.volumes.AddArchetypeVolume(str(path), node_name)
    if node is None:
        raise ValueError(f"Slicer could not read {path}")
    return node

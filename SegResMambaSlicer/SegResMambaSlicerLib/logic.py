"""Segment volume nodes with the engine: synchronously in this process, or as a polled job.

Both paths share the geometry code (:mod:`.volumes`) and the import of the result
(:mod:`.segmentation`), so the segmentation a user gets from the button is the one the tests
check. :func:`segment_volumes` runs ``segment()`` in-process (scripts, self-test);
:class:`SegmentationJob` writes the inputs to temporary NRRD files (exact double-precision
geometry, unlike NIfTI's float32 header), runs the engine's command in a child process and reads
its result back only when it succeeded.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import SimpleITK as sitk

from .process import EngineProcess, Event, engine_environment, find_python, segment_command
from .segmentation import brats_labelmap_node, check_output_node, labels_to_segmentation
from .volumes import array_from_volume, is_network_input, volume_to_image

__all__ = [
    "SegmentationJob",
    "check_inputs",
    "default_output_name",
    "modality_warnings",
    "segment_volumes",
]


def default_output_name(task, input_nodes: Sequence) -> str:
    """``<first input> SegResMamba <task>``: says what made the segmentation and from what."""
    return f"{input_nodes[0].GetName()} SegResMamba {task.name}"


def check_inputs(task, input_nodes: Sequence) -> None:
    """One input volume per task input, each with image data; ValueError says what is wrong."""
    names = [spec.name for spec in task.inputs]
    if len(input_nodes) != len(names) or any(node is None for node in input_nodes):
        raise ValueError(
            f"task {task.name} needs {len(names)} input volume(s): {', '.join(names)}; "
            "select one for each"
        )
    for spec, node in zip(task.inputs, input_nodes):
        if not is_network_input(node):
            raise ValueError(
                f"the {spec.name} volume {node.GetName()!r} is a {node.GetClassName()} (not one "
                "intensity per voxel); choose a scalar volume"
            )
        if node.GetImageData() is None:
            raise ValueError(f"the {spec.name} volume {node.GetName()!r} holds no image data")


_warning_cache: dict[tuple, str | None] = {}


def modality_warnings(task, input_nodes: Sequence) -> list[str]:
    """The engine's modality warning (an MR volume for a CT task, or the reverse) for each
    selected volume, for the panel; cached per volume and image modification, so the panel can
    ask on every refresh."""
    from segresmamba.io import modality_warning

    warnings = []
    for spec, node in zip(task.inputs, input_nodes):
        if node is None or not is_network_input(node) or node.GetImageData() is None:
            continue
        image = node.GetImageData()
        key = (node.GetID(), image.GetMTime(), task.modality, spec.name)
        if key not in _warning_cache:
            if len(_warning_cache) > 64:
                _warning_cache.clear()
            try:
                voxels = array_from_volume(node, copy=False)
            except ValueError:
                voxels = None
            name = f"{spec.name} volume {node.GetName()!r}"
            found = modality_warning(voxels, task, name) if voxels is not None else None
            _warning_cache[key] = found
        if _warning_cache[key]:
            warnings.append(_warning_cache[key])
    return warnings


def segment_volumes(
    scene,
    task,
    input_nodes: Sequence,
    output_node=None,
    *,
    model: str | os.PathLike | None = None,
    device: str = "auto",
    fast: bool = False,
    overlap: float = 0.25,
    brats_labelmap: bool = False,
    progress: Callable[[str, float], None] | None = None,
):
    """Segment ``input_nodes`` (in ``task.inputs`` order) and return the filled segmentation node.

    Runs the engine's ``segment()`` in this process (blocking). ``model`` is a registry name or a
    checkpoint path (None: the task's default model); ``output_node`` is replaced, None creates
    one. For BraTS, ``brats_labelmap`` also adds the combined labelmap volume.
    """
    from segresmamba.inference import segment
    from segresmamba.tasks import get_task
    from segresmamba.weights import load_checkpoint, resolve_model

    task = get_task(task)
    check_inputs(task, input_nodes)
    check_output_node(output_node)
    images = [volume_to_image(node) for node in input_nodes]
    checkpoint = resolve_model(task, model, progress=False)
    network, _header = load_checkpoint(checkpoint, task=task)
    result = segment(
        images, task, network, device=device, fast=fast, overlap=overlap, progress=progress
    )
    return _import_result(scene, task, result, input_nodes, output_node, brats_labelmap)


def _import_result(scene, task, result: sitk.Image, input_nodes, output_node, brats_labelmap):
    reference = input_nodes[0]
    node = labels_to_segmentation(
        scene, result, task, reference, output_node, default_output_name(task, input_nodes)
    )
    if brats_labelmap and task.output == "sigmoid":
        brats_labelmap_node(scene, result, task, reference, f"{node.GetName()} BraTS labelmap")
    return node


class SegmentationJob:
    """One run of the engine's command on volume nodes, for a UI that must stay responsive.

    ``start()`` writes the inputs and launches the child; the UI calls ``poll()`` from a timer and,
    on the "finished" event, ``finish()``: the segmentation node on success (None after a failure
    or a cancel, ``error`` saying why). The scene is touched only by ``finish()`` after success,
    so a cancelled or failed run leaves it exactly as it was. Temporary files are removed.
    """

    def __init__(
        self,
        scene,
        task,
        input_nodes: Sequence,
        output_node=None,
        *,
        model: str | None = None,
        device: str = "auto",
        fast: bool = False,
        overlap: float | None = None,
        brats_labelmap: bool = False,
        python: str | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> None:
        from segresmamba.tasks import get_task

        self.scene = scene
        self.task = get_task(task)
        check_inputs(self.task, input_nodes)
        check_output_node(output_node)
        self.input_nodes = list(input_nodes)
        self.output_node = output_node
        self.options = {"model": model, "device": device, "fast": fast, "overlap": overlap}
        self.brats_labelmap = brats_labelmap
        self.python = python or find_python()
        self.environment = engine_environment(environment)
        self.folder: Path | None = None
        self.process: EngineProcess | None = None
        self.error = ""

    @property
    def output_path(self) -> Path:
        assert self.folder is not None
        return self.folder / "result.nrrd"

    def start(self) -> None:
        """Write each input (named after the task input, for the log) and start the engine.
        The user chose which volume is which in the selectors, so the engine takes them in
        that order (``--inputs-in-order``) instead of guessing from names."""
        self.folder = Path(tempfile.mkdtemp(prefix="SegResMamba-"))
        try:
            paths = []
            for spec, node in zip(self.task.inputs, self.input_nodes):
                path = self.folder / f"{spec.name}.nrrd"
                sitk.WriteImage(volume_to_image(node), str(path), useCompression=False)
                paths.append(path)
            command = segment_command(
                self.python,
                self.task.name,
                paths,
                self.output_path,
                regions=self.task.output == "sigmoid",
                **self.options,
            )
            command.append("--inputs-in-order")
            self.process = EngineProcess(command, env=self.environment, cwd=self.folder)
            self.process.start()
        except BaseException:
            self.cleanup()
            raise

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    @property
    def cancelled(self) -> bool:
        return self.process is not None and self.process.cancelled

    def poll(self) -> list[Event]:
        """Events since the last call (never blocks); after a cancel, the temporary folder goes
        once the process has ended."""
        if self.process is None:
            return []
        events = self.process.poll()
        if self.process.cancelled and not self.process.running:
            self.cleanup()
        return events

    def cancel(self) -> None:
        """Stop the engine and its children without waiting (:meth:`poll` completes it);
        nothing is added to the scene."""
        self.error = "cancelled; the scene is unchanged"
        if self.running:
            self.process.cancel()
        else:
            self.cleanup()

    def kill(self) -> None:
        """Kill the engine's process tree now (Slicer quitting); :meth:`poll` then tidies up."""
        self.error = "cancelled; the scene is unchanged"
        if self.process is not None:
            self.process.kill()

    def finish(self):
        """After the "finished" event: the segmentation node, or None with ``error`` set."""
        try:
            process = self.process
            if process is None or process.cancelled:
                self.error = self.error or "cancelled; the scene is unchanged"
                return None
            if process.returncode != 0:
                self.error = process.error_message or (
                    f"the engine stopped with exit code {process.returncode}; see the log"
                )
                return None
            result = sitk.ReadImage(str(self.output_path))
            return _import_result(
                self.scene,
                self.task,
                result,
                self.input_nodes,
                self.output_node,
                self.brats_labelmap,
            )
        finally:
            self.cleanup()

    def cleanup(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

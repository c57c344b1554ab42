"""``segment()``: images in, a labelmap on exactly the first input's grid out.

Steps: check inputs -> stack them on the first input's grid (physical-space resampling) ->
RAS + task spacing + intensity (MONAI) -> sliding window (Gaussian blending, optional flip TTA)
-> argmax / sigmoid > 0.5 at the working resolution -> nearest-neighbour back onto the input
grid. Only a uint8 volume ever exists at input resolution: never per-class float maps, which is
what makes other tools run out of memory on large CTs.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from torch import nn

from ..errors import CheckpointError, SegResMambaError
from ..io import read_image, validate_image
from .body import body_box, box_shape
from .device import resolve_device
from .geometry import label_image_from_array
from .preprocess import prepare, working_spacing
from .sliding import SINGLE_WINDOW_GROWTH, predict

__all__ = ["Progress", "regions_to_labelmap", "segment"]

_log = logging.getLogger("segresmamba.inference")

Progress = Callable[[str, float], None]
"""``progress(stage, fraction)``: stage is "preparing", "segmenting", "restoring" or "done";
fraction (0..1) is the share of the whole ``segment()`` call done, for a bar with an ETA."""

TIE_BREAK_MM = (1e-3, 2e-3, 3e-3)
"""A one-micrometre nudge for nearest-neighbour lookups back onto the input grid. Input voxel
centres often fall exactly halfway between working voxels (3 mm input, 1.5 mm working), and
rounding such ties in index space goes opposite ways for opposite axis orders, so the same
scan stored LPS or PIR could get labels one working voxel apart. Nudging in physical space
breaks every tie the same way whatever the file's layout."""

STAGES = {"preparing": (0.0, 0.05), "segmenting": (0.05, 0.95), "restoring": (0.95, 1.0)}


def _report(progress: Progress | None, stage: str, within: float = 0.0) -> None:
    if progress is not None:
        start, end = STAGES.get(stage, (1.0, 1.0))
        progress(stage, start + (end - start) * within)


def _load_inputs(images, task) -> tuple[list[sitk.Image], list[str]]:
    """Images (or paths) -> checked 3D volumes, one per task input, in channel order."""
    if isinstance(images, (sitk.Image, str, os.PathLike)):
        images = [images]
    images = list(images)
    spec_names = [spec.name for spec in task.inputs]
    if len(images) != len(spec_names):
        raise SegResMambaError(
            f"task {task.name} takes {len(spec_names)} input image(s) ({', '.join(spec_names)}) "
            f"in that order; got {len(images)}"
        )
    loaded = []
    for image, name in zip(images, spec_names):
        if isinstance(image, sitk.Image):
            loaded.append(validate_image(image, f"the {name} input"))
        else:
            loaded.append(read_image(image))
    return loaded, spec_names


def _load_model(model, task) -> nn.Module:
    """An nn.Module as is; a checkpoint path through ``segresmamba.weights.load_checkpoint``."""
    if isinstance(model, (str, os.PathLike)):
        from ..weights import load_checkpoint

        model, _header = load_checkpoint(Path(model), task=task)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module or a checkpoint path, got {type(model)}")
    for attribute, expected in (
        ("in_channels", task.in_channels),
        ("out_channels", task.out_channels),
    ):
        found = getattr(model, attribute, expected)
        if found != expected:
            raise CheckpointError(
                f"the model has {found} {attribute.replace('_', ' ')} but task {task.name} needs "
                f"{expected}; use a model made for {task.name}"
            )
    return model


def _labels_at_working_resolution(probabilities: torch.Tensor, output: str) -> np.ndarray:
    """argmax (softmax) or per-region > 0.5 packed as bits (sigmoid), as one uint8 array, so a
    single nearest-neighbour resampling carries every region back to the input grid."""
    if output == "softmax":
        return probabilities.argmax(dim=0).to(torch.uint8).numpy()
    if probabilities.shape[0] > 8:
        raise SegResMambaError("sigmoid tasks with more than 8 regions are not supported")
    bits = torch.zeros(probabilities.shape[1:], dtype=torch.uint8)
    for region in range(probabilities.shape[0]):
        bits |= (probabilities[region] > 0.5).to(torch.uint8) << region
    return bits.numpy()


def segment(
    images: sitk.Image | str | os.PathLike | Sequence[sitk.Image | str | os.PathLike],
    task,
    model: nn.Module | str | os.PathLike,
    device: str | torch.device = "auto",
    fast: bool = False,
    tta: bool = False,
    overlap: float = 0.25,
    sw_batch_size: int | None = None,
    progress: Progress | None = None,
    body_crop: bool = True,
) -> sitk.Image:
    """Segment one case and return its labels on exactly the first input's grid.

    Args:
        images: the task's inputs in channel order (``task.inputs``), as SimpleITK images or
            paths; extra MRI sequences on other grids are resampled onto the first in physical
            space (logged as a note).
        task: a Task or task name (``segresmamba.tasks``).
        model: the network (e.g. from ``load_checkpoint``) or a checkpoint path.
        device: "auto" (CUDA, else MPS, else CPU), "cpu", "cuda" or "mps".
        fast: work at the task's coarser ``fast_spacing_mm`` (several times faster on CPU).
        tta: average the predictions over flips along each axis (4x the compute).
        overlap: sliding-window overlap between neighbouring patches (0..1).
        sw_batch_size: windows per network call; default 4 on a GPU, 1 on the CPU.
        progress: ``progress(stage, fraction)`` callback, see :data:`Progress`.
        body_crop: CT tasks: run the sliding window only over the body's bounding box (plus
            half a patch each side, :mod:`.body`); outside it is background. False: everywhere.

    Returns:
        Softmax tasks: a uint8 labelmap (values as ``task.labels``). Sigmoid tasks (BraTS): a
        uint8 multi-component image, one 0/1 component per region in ``task.labels`` order
        (TC, WT, ET); :func:`regions_to_labelmap` turns it into the BraTS labelmap.
        Size, spacing, origin and direction are identical to the first input's.
    """
    from ..tasks import get_task

    task = get_task(task)
    if not 0.0 <= float(overlap) < 1.0:
        raise SegResMambaError(f"overlap must be at least 0 and below 1, got {overlap}")
    started = time.perf_counter()
    _report(progress, "preparing")
    inputs, names = _load_inputs(images, task)
    model = _load_model(model, task)
    run_device = resolve_device(device)
    if sw_batch_size is None:
        sw_batch_size = 1 if run_device.type == "cpu" else 4
    if int(sw_batch_size) < 1:
        raise SegResMambaError(f"sw_batch_size must be 1 or more, got {sw_batch_size}")

    spacing_mm = working_spacing(task, fast)
    trained_mm = getattr(model, "trained_spacing_mm", None)
    if trained_mm is not None and any(abs(a - b) > 1e-3 for a, b in zip(trained_mm, spacing_mm)):
        _log.warning(
            "this model was trained at %s mm but runs at %s mm%s: expect poor labels; use a "
            "model trained at that spacing",
            "x".join(f"{v:g}" for v in trained_mm),
            "x".join(f"{v:g}" for v in spacing_mm),
            " (fast mode)" if fast else "",
        )
    volume = prepare(inputs, task, fast=fast, input_names=names)
    affine = volume.affine.clone()
    _log.debug(
        "working grid %s at %s mm on %s",
        tuple(volume.shape[1:]),
        spacing_mm,
        run_device,
    )
    working_shape = tuple(int(s) for s in volume.shape[1:])
    box = None
    if body_crop and task.modality == "CT":
        box = body_box(inputs[0], affine, working_shape, task.patch_size)
        if box is not None:
            _log.debug("body crop: working grid %s -> %s", working_shape, box_shape(box))
            plain = volume.as_tensor() if hasattr(volume, "as_tensor") else volume
            volume = plain[(slice(None), *box)].clone()  # a copy: the full volume is freed
            del plain
    _report(progress, "segmenting")
    probabilities = predict(
        volume,
        model,
        task.output,
        task.patch_size,
        run_device,
        overlap=float(overlap),
        sw_batch_size=int(sw_batch_size),
        tta=tta,
        progress=lambda done: _report(progress, "segmenting", done),
        single_window_growth=SINGLE_WINDOW_GROWTH if fast else 1.0,
    )
    del volume
    _report(progress, "restoring")
    labels = _labels_at_working_resolution(probabilities, task.output)
    del probabilities
    if box is not None:  # outside the body's box: background (0, every region bit off)
        cropped, labels = labels, np.zeros(working_shape, dtype=np.uint8)
        labels[box] = cropped
    working = label_image_from_array(labels, affine)
    reference = inputs[0]
    nudge = sitk.TranslationTransform(3, TIE_BREAK_MM)
    result = sitk.Resample(working, reference, nudge, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    if task.output == "sigmoid":
        packed = sitk.GetArrayViewFromImage(result)
        components = [
            sitk.GetImageFromArray(((packed >> r) & 1).astype(np.uint8))
            for r in range(task.out_channels)
        ]
        for component in components:
            component.CopyInformation(reference)
        result = sitk.Compose(components)
    result.CopyInformation(reference)
    _report(progress, "done", 1.0)
    _log.debug("segmented in %.1f s", time.perf_counter() - started)
    return result


def regions_to_labelmap(regions: sitk.Image, task, convention: str = "2023") -> sitk.Image:
    """The combined BraTS labelmap from :func:`segment`'s region masks (TC, WT, ET).

    ``convention`` "2023": 1 necrotic core (TC without ET), 2 edema (WT without TC), 3 enhancing
    tumour; "2021": the same with 4 for enhancing tumour. Painting follows the task's rules.
    """
    from ..tasks import get_task

    task = get_task(task)
    if task.labelmap is None:
        raise SegResMambaError(f"task {task.name} has no combined labelmap rules")
    components = regions.GetNumberOfComponentsPerPixel()
    voxels = sitk.GetArrayViewFromImage(regions)  # (z, y, x, regions)
    if components == 1:
        voxels = voxels[..., None]
    labelmap = task.labelmap.from_regions(np.moveaxis(voxels, -1, 0), convention)
    result = sitk.GetImageFromArray(labelmap)
    result.CopyInformation(regions)
    return result

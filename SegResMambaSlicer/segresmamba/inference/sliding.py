"""Sliding-window prediction: Gaussian-blended patches, optional flip TTA, and a fallback ladder
for GPUs that run out of memory (batch 1, then CPU), each step announced in the log."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import torch
from monai.inferers import sliding_window_inference
from torch import nn

from ..network import MIN_SIZE, SIZE_MULTIPLE
from .device import autocast, is_out_of_memory

__all__ = ["count_windows", "predict", "window_size"]

_log = logging.getLogger("segresmamba.inference")

TTA_FLIPS = ((), (2,), (3,), (4,))
"""Flip TTA: the image as is and mirrored along each spatial axis (dims of a 5D batch)."""

STITCH_ON_CPU_BYTES = 1 << 30
"""Stitch the full-volume output on the CPU when it would take more than this on the GPU."""


SINGLE_WINDOW_GROWTH = 1.5
"""In fast mode, a volume that fits in one window of at most this many times the task's patch
per side is segmented as that one window: overlapping patches on a small volume compute the same
voxels several times (8 windows of 96^3 cover a 122x101x112 volume five times over)."""


def window_size(
    patch_size: Sequence[int], image_size: Sequence[int], single_window_growth: float = 1.0
) -> tuple[int, ...]:
    """The task's patch, shrunk to the image (rounded up to a multiple of 32, at least the
    network's minimum) where the image is smaller: less compute on padding, and every window a
    size the network takes. With ``single_window_growth`` > 1, the whole image becomes one
    window when each of its sides (so rounded) is within that factor of the patch."""
    fitted = tuple(
        max(MIN_SIZE, math.ceil(int(s) / SIZE_MULTIPLE) * SIZE_MULTIPLE) for s in image_size
    )
    if all(f <= single_window_growth * int(p) for f, p in zip(fitted, patch_size)):
        return fitted
    return tuple(min(int(p), f) for p, f in zip(patch_size, fitted))


def count_windows(image_size: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    """How many windows MONAI's sliding_window_inference visits (for progress and ETA)."""
    total = 1
    for size, patch in zip(image_size, roi):
        if size <= patch:
            continue
        interval = max(int(patch * (1 - overlap)), 1)
        total *= math.ceil((size - patch) / interval) + 1
    return total


def _predictor(
    model: nn.Module, output: str, tta: bool, device: torch.device, on_window: Callable[[int], None]
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Network -> probabilities (softmax or sigmoid), averaged over flips when ``tta``."""
    activate = (lambda x: torch.softmax(x, dim=1)) if output == "softmax" else torch.sigmoid
    flips = TTA_FLIPS if tta else ((),)

    def predict_windows(windows: torch.Tensor) -> torch.Tensor:
        total = None
        for dims in flips:
            batch = windows.flip(dims) if dims else windows
            with autocast(device):
                logits = model(batch)
            probabilities = activate(logits.float())
            probabilities = probabilities.flip(dims) if dims else probabilities
            total = probabilities if total is None else total + probabilities
        on_window(windows.shape[0])
        return total / len(flips)

    return predict_windows


def predict(
    volume: torch.Tensor,
    model: nn.Module,
    output: str,
    patch_size: Sequence[int],
    device: torch.device,
    overlap: float = 0.25,
    sw_batch_size: int = 1,
    tta: bool = False,
    progress: Callable[[float], None] | None = None,
    single_window_growth: float = 1.0,
) -> torch.Tensor:
    """Class (softmax) or region (sigmoid) probabilities for a (C, i, j, k) volume, returned on
    the CPU as (K, i, j, k) float32 at the volume's own (working) resolution.
    ``single_window_growth``: see :func:`window_size` (fast mode passes
    :data:`SINGLE_WINDOW_GROWTH`).

    On a CUDA out-of-memory error it retries with sw_batch_size 1, then on the CPU.
    """
    image_size = tuple(volume.shape[1:])
    roi = window_size(patch_size, image_size, single_window_growth)
    total = count_windows(image_size, roi, overlap)
    batch = torch.as_tensor(volume).float().unsqueeze(0)  # plain tensor: no metadata tracking

    attempts = [(device, sw_batch_size)]
    if device.type != "cpu":
        if sw_batch_size > 1:
            attempts.append((device, 1))
        attempts.append((torch.device("cpu"), 1))
    for attempt, (run_device, run_batch) in enumerate(attempts):
        done = 0

        def on_window(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(min(done / total, 1.0))

        output_bytes = 4 * model_out_channels(model) * math.prod(image_size)
        stitch = run_device if output_bytes < STITCH_ON_CPU_BYTES else torch.device("cpu")
        model.to(run_device).eval()
        try:
            with torch.inference_mode():
                probabilities = sliding_window_inference(
                    batch,
                    roi_size=roi,
                    sw_batch_size=run_batch,
                    predictor=_predictor(model, output, tta, run_device, on_window),
                    overlap=overlap,
                    mode="gaussian",
                    sw_device=run_device,
                    device=stitch,
                )
            return torch.as_tensor(probabilities)[0].float().cpu()
        except Exception as error:  # only out-of-memory is retried, below
            if not is_out_of_memory(error) or attempt == len(attempts) - 1:
                raise
            next_device, next_batch = attempts[attempt + 1]
            _log.warning(
                "out of memory on %s with sw_batch_size %d; retrying on %s with sw_batch_size %d",
                run_device,
                run_batch,
                next_device,
                next_batch,
            )
            del error
            if run_device.type == "cuda":
                torch.cuda.empty_cache()
    raise AssertionError("unreachable")


def model_out_channels(model: nn.Module) -> int:
    """Output channels of a network (its ``out_channels`` attribute when it has one)."""
    return int(getattr(model, "out_channels", 1))

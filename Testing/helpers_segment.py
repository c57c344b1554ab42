"""Shared pieces for the IO, inference, geometry and CLI tests: small real networks.

``ThresholdNet`` is a real ``nn.Module`` that labels voxels by intensity bins, so a test can
know what the answer must be without training anything; ``tiny_checkpoint`` saves a randomly
initialised small SegResMamba through the real checkpoint code.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from torch import nn

from segresmamba import SegResMamba
from segresmamba.network import check_input_shape
from segresmamba.phantom import rotation_matrix
from segresmamba.tasks import get_task
from segresmamba.weights import make_header, save_checkpoint

TINY_WIDTHS = (8, 16, 32, 64)

rotation = rotation_matrix
"""Rotation from angles about x, y, z in degrees (the phantom's own; kept for older tests)."""


class ThresholdNet(nn.Module):
    """Logits that make voxel label = number of ``thresholds`` below the (normalised) value of
    input ``channel``. Takes only sizes SegResMamba takes, so it checks the pipeline's padding too."""

    def __init__(
        self, thresholds: Sequence[float], out_channels: int, in_channels: int = 1, channel: int = 0
    ):
        super().__init__()
        self.in_channels, self.out_channels, self.channel = in_channels, out_channels, channel
        self.register_buffer("thresholds", torch.tensor(sorted(thresholds), dtype=torch.float32))
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_shape(x.shape, self.in_channels)
        self.calls += 1
        labels = torch.bucketize(x[:, self.channel].contiguous(), self.thresholds).clamp(
            max=self.out_channels - 1
        )
        return 10.0 * F.one_hot(labels, self.out_channels).permute(0, 4, 1, 2, 3).float()


def tiny_checkpoint(path: Path, task_name: str, seed: int = 0) -> Path:
    """A randomly initialised SegResMamba (widths 8-64) for ``task_name``, saved for real."""
    task = get_task(task_name)
    torch.manual_seed(seed)
    model = SegResMamba(task.in_channels, task.out_channels, widths=TINY_WIDTHS)
    header = make_header(task, {"widths": list(TINY_WIDTHS)}, {"dataset": "none (random init)"})
    return save_checkpoint(path, model, header)


def grid_of(image: sitk.Image) -> tuple:
    """Size, spacing, origin, direction: what "the same grid" means."""
    return image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()


def assert_same_grid(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), rtol=0, atol=1e-12)


def window_ct(hu: np.ndarray, a_min: float = -175.0, a_max: float = 250.0) -> np.ndarray:
    """The CT window of the abdominal tasks, as the pipeline applies it."""
    return np.clip((hu.astype(np.float64) - a_min) / (a_max - a_min), 0.0, 1.0)

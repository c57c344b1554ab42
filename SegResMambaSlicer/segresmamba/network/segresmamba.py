"""SegResMamba (Das et al., MIDL 2025) as the paper describes it, with its Mamba layers running.

The authors' public code builds its ToM layers but never calls them, has no second ToM per CMMB,
and carries about 40 M parameters of an unused SegResNet encoder. This module follows
``docs/network.md``: both ToMs live, and every parameter takes part.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .blocks import ConvMambaMixedBlock, Downsample, SkipMLP, UpStage

SIZE_MULTIPLE = 32
"""Every spatial size must be a multiple of this: stem /2, three downsamplings /8, CMMB /2."""

MIN_SIZE = 64
"""Smallest spatial size: below it the deepest CMMB would instance-normalise a single voxel."""


class EncoderStage(nn.Module):
    """Optional downsampling, a CMMB, and the stage's output conv."""

    def __init__(self, channels: int, downsample: bool, second_tom: bool, tom_kwargs: dict) -> None:
        super().__init__()
        self.down = Downsample(channels // 2) if downsample else None
        self.cmmb = ConvMambaMixedBlock(channels, second_tom=second_tom, **tom_kwargs)
        self.out_conv = nn.Conv3d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down is not None:
            x = self.down(x)
        return self.out_conv(self.cmmb(x))


class SegResMamba(nn.Module):
    """3D segmentation network: a conv+Mamba encoder and a light SegResNet-style decoder.

    Args:
        in_channels: image channels (1 for CT, 4 for BraTS MRI).
        out_channels: output channels (classes including background for softmax tasks, regions
            for sigmoid tasks).
        widths: channels of the four encoder stages; each must be twice the previous and a
            multiple of 8 (GroupNorm in the decoder).
        second_tom: the full-resolution ToM at the end of each CMMB (default on, as the paper).
        tom_residual: LayerNorm and residual around each ToM (default on).
        d_state, d_conv, expand: Mamba's state size, conv1d kernel and inner expansion.
        scan_backend: force the selective-scan backend ("torch", "numba", "triton" or "cuda",
            see :func:`segresmamba.scan.resolve_backend`); None picks the best for the device.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 14,
        widths: Sequence[int] = (48, 96, 192, 384),
        second_tom: bool = True,
        tom_residual: bool = True,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        scan_backend: str | None = None,
    ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) != 4 or any(b != 2 * a for a, b in zip(widths, widths[1:])):
            raise ValueError(f"widths must be four sizes, each twice the last; got {widths}")
        if widths[0] % 8:
            raise ValueError(f"widths must be multiples of 8 (GroupNorm(8)); got {widths}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.widths = widths
        tom_kwargs = dict(
            d_state=d_state,
            d_conv=d_conv,
            expand=expand,
            residual=tom_residual,
            scan_backend=scan_backend,
        )
        self.stem = nn.Conv3d(in_channels, widths[0], 7, stride=2, padding=3)
        self.stages = nn.ModuleList(
            EncoderStage(c, downsample=i > 0, second_tom=second_tom, tom_kwargs=tom_kwargs)
            for i, c in enumerate(widths)
        )
        self.skips = nn.ModuleList(SkipMLP(c) for c in widths)
        self.up = nn.ModuleList(UpStage(widths[i + 1], widths[i]) for i in (2, 1, 0))
        self.head = nn.ConvTranspose3d(widths[0], out_channels, 2, stride=2)

    def set_scan_backend(self, backend: str | None) -> None:
        """Switch every ToM to another scan backend; the weights stay as they are."""
        for module in self.modules():
            if hasattr(module, "scan_backend"):
                module.scan_backend = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, in_channels, D, H, W), each of D, H, W a multiple of 32, >= 64 -> logits."""
        check_input_shape(x.shape, self.in_channels)
        features = self.stem(x)
        skips = []
        for stage, skip in zip(self.stages, self.skips):
            features = stage(features)
            skips.append(skip(features))
        out = skips[-1]
        for up, skip in zip(self.up, reversed(skips[:-1])):
            out = up(out, skip)
        return self.head(out)


def check_input_shape(shape: Sequence[int], in_channels: int) -> None:
    """Raise a ValueError that names the sizes that work when ``shape`` cannot be segmented."""
    if len(shape) != 5:
        raise ValueError(
            f"SegResMamba takes (batch, channels, D, H, W) tensors; got {len(shape)} dimensions "
            f"{tuple(shape)}"
        )
    if shape[1] != in_channels:
        raise ValueError(f"this SegResMamba takes {in_channels} input channel(s), got {shape[1]}")
    spatial = tuple(int(s) for s in shape[2:])
    if any(s % SIZE_MULTIPLE or s < MIN_SIZE for s in spatial):
        down = tuple(max(MIN_SIZE, s // SIZE_MULTIPLE * SIZE_MULTIPLE) for s in spatial)
        up = tuple(max(MIN_SIZE, -(-s // SIZE_MULTIPLE) * SIZE_MULTIPLE) for s in spatial)
        raise ValueError(
            f"SegResMamba needs every spatial size to be a multiple of {SIZE_MULTIPLE} and at "
            f"least {MIN_SIZE}; got {spatial}. Nearest sizes that work: {down} or {up} (pad or "
            f"crop the input, or use sliding-window inference with such a patch size)"
        )

"""The convolutional pieces of SegResMamba: the CMMB, the encoder's down path, skips, decoder."""

from __future__ import annotations

import torch
from torch import nn

from .tom import TriOrientedMamba


def conv_norm_relu(conv: nn.Module, channels: int) -> nn.Sequential:
    """conv -> InstanceNorm (no affine) -> ReLU, the encoder's basic unit."""
    return nn.Sequential(conv, nn.InstanceNorm3d(channels), nn.ReLU(inplace=True))


class ConvMambaMixedBlock(nn.Module):
    """CMMB: a conv bottleneck with a ToM at half resolution, a residual, and a ToM at full size.

    F1 = reduce(X) (stride 2), F2 = conv, F3 = ToM(F2), F4 = conv, F5 = restore(F4) (transposed,
    back to X's size), F6 = F5 + X, out = ToM(F6). Running the first ToM at half resolution is
    what keeps the block cheap; the second one gives full-resolution global context.

    Args:
        channels: feature channels in and out.
        second_tom: run the full-resolution ToM on F6 (the paper's model); off skips it.
        tom_kwargs: passed to both :class:`TriOrientedMamba` layers.
    """

    def __init__(self, channels: int, second_tom: bool = True, **tom_kwargs) -> None:
        super().__init__()
        self.reduce = conv_norm_relu(
            nn.Conv3d(channels, channels, 5, stride=2, padding=2), channels
        )
        self.conv_before = conv_norm_relu(nn.Conv3d(channels, channels, 3, padding=1), channels)
        self.tom = TriOrientedMamba(channels, **tom_kwargs)
        self.conv_after = conv_norm_relu(nn.Conv3d(channels, channels, 3, padding=1), channels)
        self.restore = conv_norm_relu(
            nn.ConvTranspose3d(channels, channels, 5, stride=2, padding=2, output_padding=1),
            channels,
        )
        self.tom_out = TriOrientedMamba(channels, **tom_kwargs) if second_tom else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.conv_after(self.tom(self.conv_before(self.reduce(x))))
        features = self.restore(features) + x
        return self.tom_out(features) if self.tom_out is not None else features


class Downsample(nn.Module):
    """IN -> Conv3 -> IN -> Conv2 stride 2 doubling the channels: the start of stages 1-3."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.InstanceNorm3d(channels),
            nn.Conv3d(channels, channels, 3, padding=1),
            nn.InstanceNorm3d(channels),
            nn.Conv3d(channels, 2 * channels, 2, stride=2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class SkipMLP(nn.Module):
    """IN -> Conv1 (c -> 2c) -> GELU -> Conv1 (2c -> c): what an encoder stage hands the decoder."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.InstanceNorm3d(channels),
            nn.Conv3d(channels, 2 * channels, 1),
            nn.GELU(),
            nn.Conv3d(2 * channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class ResidualBlock(nn.Module):
    """SegResNet's decoder block: (GroupNorm -> ReLU -> Conv3) twice, plus identity."""

    def __init__(self, channels: int, groups: int = 8) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.GroupNorm(groups, channels),
            nn.ReLU(inplace=True),
            nn.Conv3d(channels, channels, 3, padding=1, bias=False),
            nn.GroupNorm(groups, channels),
            nn.ReLU(inplace=True),
            nn.Conv3d(channels, channels, 3, padding=1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x) + x


class UpStage(nn.Module):
    """Conv1 halving channels -> trilinear x2 -> add the skip -> residual block."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.project = nn.Conv3d(in_channels, out_channels, 1, bias=False)
        self.upsample = nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False)
        self.block = ResidualBlock(out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(self.upsample(self.project(x)) + skip)

"""The networks the benchmark compares, built the way their authors' tutorials build them.

Every factory takes the same arguments so that one worker loop measures all of them alike:
``(in_channels, out_channels, size)`` where ``size`` is the (D, H, W) input, which UNETR needs
for its fixed patch grid. MONAI is imported only when a peer is built.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

Size = tuple[int, int, int]


@dataclass(frozen=True)
class ModelSpec:
    """One benchmarked network: its name, how it is configured (for the report), its factory."""

    name: str
    description: str
    build: Callable[[int, int, Size], nn.Module]
    size_multiple: int = 16


def _segresmamba(second_tom: bool) -> Callable[[int, int, Size], nn.Module]:
    def build(in_channels: int, out_channels: int, size: Size) -> nn.Module:
        from ..network import SegResMamba

        return SegResMamba(in_channels, out_channels, second_tom=second_tom)

    return build


def _unet(in_channels: int, out_channels: int, size: Size) -> nn.Module:
    from monai.networks.layers import Norm
    from monai.networks.nets import UNet

    # As MONAI's spleen and BTCV tutorials: five levels, two residual units, batch norm.
    return UNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=(16, 32, 64, 128, 256),
        strides=(2, 2, 2, 2),
        num_res_units=2,
        norm=Norm.BATCH,
    )


def _segresnet(init_filters: int) -> Callable[[int, int, Size], nn.Module]:
    def build(in_channels: int, out_channels: int, size: Size) -> nn.Module:
        from monai.networks.nets import SegResNet

        # MONAI's BraTS tutorial layout (blocks_down 1,2,2,4; blocks_up 1,1,1).
        return SegResNet(
            spatial_dims=3,
            init_filters=init_filters,
            in_channels=in_channels,
            out_channels=out_channels,
            blocks_down=(1, 2, 2, 4),
            blocks_up=(1, 1, 1),
        )

    return build


def _unetr(in_channels: int, out_channels: int, size: Size) -> nn.Module:
    from monai.networks.nets import UNETR

    # As MONAI's BTCV UNETR tutorial; the patch grid is fixed by img_size, so it is the input.
    return UNETR(
        in_channels=in_channels,
        out_channels=out_channels,
        img_size=tuple(size),
        feature_size=16,
        hidden_size=768,
        mlp_dim=3072,
        num_heads=12,
        proj_type="conv",
        norm_name="instance",
        res_block=True,
        dropout_rate=0.0,
    )


def _swinunetr(in_channels: int, out_channels: int, size: Size) -> nn.Module:
    from monai.networks.nets import SwinUNETR

    kwargs = dict(in_channels=in_channels, out_channels=out_channels, feature_size=48)
    # MONAI 1.5 removed img_size (the network adapts to any multiple of 32); older ones need it.
    if "img_size" in inspect.signature(SwinUNETR.__init__).parameters:
        kwargs["img_size"] = tuple(size)
    return SwinUNETR(**kwargs)


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "segresmamba",
            "SegResMamba, widths 48-384, both ToMs per CMMB (the paper's model)",
            _segresmamba(True),
            32,
        ),
        ModelSpec(
            "segresmamba-1tom",
            "SegResMamba with the second (full-resolution) ToM off (second_tom=False)",
            _segresmamba(False),
            32,
        ),
        ModelSpec(
            "unet",
            "MONAI UNet, channels 16-256, strides 2x4, 2 residual units, batch norm",
            _unet,
            16,
        ),
        ModelSpec(
            "segresnet",
            "MONAI SegResNet, init_filters 16, blocks 1,2,2,4 / 1,1,1 (BraTS tutorial)",
            _segresnet(16),
            8,
        ),
        ModelSpec(
            "segresnet32",
            "MONAI SegResNet, init_filters 32, blocks 1,2,2,4 / 1,1,1",
            _segresnet(32),
            8,
        ),
        ModelSpec(
            "unetr",
            "MONAI UNETR, feature_size 16, hidden 768, 12 heads, img_size = input",
            _unetr,
            16,
        ),
        ModelSpec("swinunetr", "MONAI SwinUNETR, feature_size 48 (v1)", _swinunetr, 32),
    )
}
"""Every model the benchmark knows, by the name ``--models`` takes."""

DEFAULT_MODELS = ("segresmamba", "segresmamba-1tom", "unet", "segresnet", "unetr", "swinunetr")
"""What a plain ``segresmamba bench`` measures (``segresnet32`` on request)."""

REFERENCE_MODEL = "swinunetr"
"""Ratios in the report are taken against this peer when it was measured in the same run."""


def parse_models(text: str | Sequence[str]) -> list[str]:
    """Comma-separated model names -> list, in order, checked; ``all`` means every model."""
    names = text.split(",") if isinstance(text, str) else list(text)
    names = [n.strip().lower() for n in names if n.strip()]
    if names == ["all"]:
        return list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown or not names:
        raise ValueError(
            f"unknown model(s) {', '.join(unknown) or '(none given)'}; choose from "
            f"{', '.join(MODELS)} or 'all'"
        )
    return list(dict.fromkeys(names))


def check_size(name: str, size: Sequence[int]) -> None:
    """Raise ValueError, before any process starts, when ``name`` cannot take this input."""
    spec = MODELS[name]
    size = tuple(int(s) for s in size)
    smallest = spec.size_multiple
    if name.startswith("segresmamba"):
        from .. import network

        smallest = getattr(network, "MIN_SIZE", network.SIZE_MULTIPLE)
    if any(s % spec.size_multiple or s < smallest for s in size):
        raise ValueError(
            f"{name} needs every input size to be a multiple of {spec.size_multiple} and at least "
            f"{smallest}; got {'x'.join(str(s) for s in size)}"
        )


def build_model(name: str, in_channels: int, out_channels: int, size: Sequence[int]) -> nn.Module:
    """Build ``name`` for a (D, H, W) input; raises ValueError when the size does not fit it."""
    check_size(name, size)
    return MODELS[name].build(in_channels, out_channels, tuple(int(s) for s in size))


def count_parameters(model: nn.Module) -> int:
    """All parameters, trainable or not: what a checkpoint holds."""
    return sum(p.numel() for p in model.parameters())

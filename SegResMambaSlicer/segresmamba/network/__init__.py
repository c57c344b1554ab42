"""SegResMamba and its tri-oriented Mamba layer."""

from .segresmamba import MIN_SIZE, SIZE_MULTIPLE, SegResMamba, check_input_shape
from .tom import (
    TriOrientedMamba,
    causal_conv_silu,
    direction_order,
    from_token_order,
    to_token_order,
)

__all__ = [
    "MIN_SIZE",
    "SIZE_MULTIPLE",
    "SegResMamba",
    "TriOrientedMamba",
    "causal_conv_silu",
    "check_input_shape",
    "direction_order",
    "from_token_order",
    "to_token_order",
]

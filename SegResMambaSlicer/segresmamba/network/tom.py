"""Tri-oriented Mamba (ToM): one Mamba layer that reads a 3D volume in three token orders.

The volume's voxels become a sequence in C order (depth slowest). Mamba then runs over that
sequence forwards, reversed, and in the inter-slice order (depth fastest), so every voxel sees
context from all sides. The input and output projections are shared; each direction has its own
conv1d, x_proj, dt_proj, A_log and D, named as mamba-ssm names them with the suffix ``_b``
(reverse) or ``_s`` (inter-slice), so that one state_dict works with every scan backend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..scan import reads_rows_in_order, selective_scan_tokens
from ..scan.causal_conv import causal_conv_silu

DIRECTIONS = ("", "_b", "_s")
"""Parameter-name suffixes of the forward, reverse and inter-slice directions."""


def to_token_order(
    tokens: torch.Tensor, spatial: tuple[int, int, int], suffix: str
) -> torch.Tensor:
    """Reorder (batch, D*H*W, channels) tokens from forward (C) order into a direction's order."""
    if suffix == "":
        return tokens
    if suffix == "_b":
        return tokens.flip(1)
    batch, _, channels = tokens.shape
    depth, height, width = spatial
    grid = tokens.reshape(batch, depth, height, width, channels)
    return grid.permute(0, 2, 3, 1, 4).reshape(batch, -1, channels)


def direction_order(
    spatial: tuple[int, int, int], suffix: str, device: torch.device | str | None = None
) -> torch.Tensor | None:
    """The forward-order rows a direction visits, step by step (None for the forward direction):
    ``tokens[:, direction_order(...)]`` equals :func:`to_token_order`'s result."""
    if suffix == "":
        return None
    depth, height, width = spatial
    rows = torch.arange(depth * height * width, device=device)
    if suffix == "_b":
        return rows.flip(0)
    return rows.reshape(depth, height, width).permute(1, 2, 0).reshape(-1)


def from_token_order(
    tokens: torch.Tensor, spatial: tuple[int, int, int], suffix: str
) -> torch.Tensor:
    """Inverse of :func:`to_token_order`: back to forward (C) order."""
    if suffix == "":
        return tokens
    if suffix == "_b":
        return tokens.flip(1)
    batch, _, channels = tokens.shape
    depth, height, width = spatial
    grid = tokens.reshape(batch, height, width, depth, channels)
    return grid.permute(0, 3, 1, 2, 4).reshape(batch, -1, channels)


class TriOrientedMamba(nn.Module):
    """ToM(z) = Mamba(z_forward) + Mamba(z_reverse) + Mamba(z_interslice), on a 3D feature map.

    Args:
        d_model: channels of the feature map.
        d_state: size of each channel's hidden state (n).
        d_conv: kernel size of the causal depthwise conv1d.
        expand: inner width d_inner = expand * d_model.
        dt_rank: rank of the step-size projection; "auto" is ceil(d_model / 16).
        dt_min, dt_max: range of the initial step sizes (log-uniform).
        dt_init_floor: smallest initial step size.
        residual: LayerNorm before and ``+ x`` after (SegMamba's newer layout); off gives the bare
            layer.
        scan_backend: forced selective-scan backend, or None for the best available.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        residual: bool = True,
        scan_backend: str | None = None,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.d_state = d_state
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.residual = residual
        self.scan_backend = scan_backend
        self.norm = nn.LayerNorm(d_model) if residual else nn.Identity()
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)
        for suffix in DIRECTIONS:
            conv = nn.Conv1d(
                self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1
            )
            setattr(self, f"conv1d{suffix}", conv)
            setattr(
                self,
                f"x_proj{suffix}",
                nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False),
            )
            dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
            _init_dt_proj(dt_proj, self.dt_rank, dt_min, dt_max, dt_init_floor)
            setattr(self, f"dt_proj{suffix}", dt_proj)
            A_log = torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(
                self.d_inner, 1
            )
            setattr(self, f"A_log{suffix}", nn.Parameter(A_log))
            setattr(self, f"D{suffix}", nn.Parameter(torch.ones(self.d_inner)))
            getattr(self, f"A_log{suffix}")._no_weight_decay = True
            getattr(self, f"D{suffix}")._no_weight_decay = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, d_model, D, H, W) -> same shape."""
        batch, channels, *spatial = x.shape
        if channels != self.d_model:
            raise ValueError(f"ToM expects {self.d_model} channels, got {channels}")
        spatial = tuple(spatial)
        # Token-major (batch, L, channels) throughout: the layout nn.Linear and the scan share.
        tokens = self.norm(x.flatten(2).transpose(1, 2))
        # in_proj as two products (its x and z rows), so that x and z are each contiguous
        # (batch, L, d_inner) tensors: the scan reads z in place instead of copying a slice.
        weight_x, weight_z = self.in_proj.weight.split(self.d_inner, dim=0)
        # The numba conv and scan walk a direction's order over the rows where they lie (the
        # inter-slice order jumps H x W rows per step; the kernels prefetch the rows they will
        # need); other backends get each direction's tokens reordered once and put back.
        in_place = reads_rows_in_order(x.device, self.scan_backend)
        # In inference on that path, the three directions share the conv and x_proj output
        # buffers, and the second and third scans add into the first one's output: no fresh
        # tokens x channels tensor per direction (each costs its page faults), no separate sums.
        # The gate silu(z) multiplies that sum once at the end (silu(z) (a + b + c) =
        # silu(z) a + silu(z) b + silu(z) c), z made then in the conv buffer, free by then.
        shared = in_place and not torch.is_grad_enabled()
        x_in = F.linear(tokens, weight_x)
        z_in = None if shared else F.linear(tokens, weight_z)
        buffers = _Buffers.for_directions(x_in, self.dt_rank + 2 * self.d_state) if shared else None
        mixed = None
        for suffix in DIRECTIONS:
            if in_place:
                order = direction_order(spatial, suffix, x.device)
                add_to = mixed if shared else None
                y = self._direction(x_in, z_in, suffix, order, buffers, add_to)
            else:
                x_dir = to_token_order(x_in, spatial, suffix)
                z_dir = to_token_order(z_in, spatial, suffix)
                y = from_token_order(self._direction(x_dir, z_dir, suffix), spatial, suffix)
            mixed = y if mixed is None or shared else mixed + y
        if z_in is None:
            z = torch.matmul(tokens, weight_z.t(), out=buffers.conv_out)
            mixed.mul_(F.silu(z, inplace=True))
        if shared and x.is_contiguous() and mixed.dtype == x.dtype:
            # out_proj and the residual as one product per batch element, in x's own
            # channels-first layout, written over the layer norm's output (no longer needed;
            # without the norm, tokens is x itself)
            into = tokens if self.residual else torch.empty_like(x)
            residual = x if self.residual else None
            return _project_add(mixed, self.out_proj.weight, residual, into, x.shape)
        out = self.out_proj(mixed).transpose(1, 2).reshape(x.shape)
        return out + x if self.residual else out

    def _direction(
        self,
        x: torch.Tensor,
        z: torch.Tensor,
        suffix: str,
        order: torch.Tensor | None = None,
        buffers: _Buffers | None = None,
        add_to: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One Mamba pass over x and z (batch, L, d_inner), visiting their rows in ``order``
        (None: as they lie; see :func:`direction_order`). The result is in their row layout.
        Inference only: ``buffers`` receive the conv's and x_proj's outputs, and the result is
        added into ``add_to`` (and returned) when given."""
        conv = getattr(self, f"conv1d{suffix}")
        x_proj = getattr(self, f"x_proj{suffix}").weight
        if buffers is None:
            x = causal_conv_silu(x, conv, self.scan_backend, order=order)
            x_dbl = F.linear(x, x_proj)  # (batch, L, r + 2n)
        else:
            x = causal_conv_silu(x, conv, self.scan_backend, order=order, out=buffers.conv_out)
            x_dbl = torch.matmul(x, x_proj.t(), out=buffers.x_dbl)
        dt, B, C = x_dbl.split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        # dt_proj's product and bias are applied by the scan (inside the kernels on CPUs, where
        # its (batch, L, d_inner) output would be written and read back for nothing).
        dt_proj = getattr(self, f"dt_proj{suffix}")
        A = -torch.exp(getattr(self, f"A_log{suffix}").float())
        return selective_scan_tokens(
            x,
            dt,
            A,
            B,
            C,
            D=getattr(self, f"D{suffix}").float(),
            z=z,
            delta_bias=dt_proj.bias.float(),
            delta_softplus=True,
            backend=self.scan_backend,
            order=order,
            delta_proj=dt_proj.weight,
            add_to=add_to,
        )


@dataclass
class _Buffers:
    """Outputs that the three directions of one inference pass write in turn: each fresh
    tokens x channels tensor costs its page faults (about 10 ms per 42 MB at stage 0)."""

    conv_out: torch.Tensor
    x_dbl: torch.Tensor

    @classmethod
    def for_directions(cls, x_in: torch.Tensor, projected: int) -> _Buffers:
        return cls(torch.empty_like(x_in), x_in.new_empty((*x_in.shape[:-1], projected)))


def _project_add(
    mixed: torch.Tensor,
    weight: torch.Tensor,
    residual: torch.Tensor | None,
    into: torch.Tensor,
    shape: torch.Size,
) -> torch.Tensor:
    """weight @ mixed^T (+ residual), written channels-first into ``into``'s memory: the output
    projection, the move back to ``shape`` (batch, channels, D, H, W) and the residual in one
    product per batch element. ``into`` is a dead contiguous tensor with as many elements (the
    layer norm's output)."""
    batch, length, _ = mixed.shape
    channels = weight.shape[0]
    out = into.view(batch, channels, length)
    for b in range(batch):
        if residual is None:
            torch.mm(weight, mixed[b].t(), out=out[b])
        else:
            torch.addmm(residual[b].view(channels, length), weight, mixed[b].t(), out=out[b])
    return out.view(shape)


def _init_dt_proj(dt_proj: nn.Linear, dt_rank: int, dt_min: float, dt_max: float, floor: float):
    """mamba-ssm's step-size initialisation: softplus(bias) log-uniform in [dt_min, dt_max]."""
    std = dt_rank**-0.5
    nn.init.uniform_(dt_proj.weight, -std, std)
    dt = torch.exp(
        torch.rand(dt_proj.out_features) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
    ).clamp(min=floor)
    with torch.no_grad():
        dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse of softplus

"""Portable selective scan in pure PyTorch: chunked, numerically stable, with its own backward.

Why it looks like this:

* A Python step per token is far too slow, so the recurrence ``h_t = a_t h_{t-1} + b_t`` (with
  ``a_t = exp(delta_t A)``) is solved for many tokens per tensor operation.
* Inside a sub-block of ``SUB`` tokens we use the factorised form
  ``h_t = w_t * cumsum(b_s / w_s)`` with ``w_t = exp(cumsum(delta A))``. In float32 that is exact
  only while ``|cumsum(delta A)|`` stays small, so every sub-block is checked against
  ``LOG_LIMIT``; a chunk that fails the check is solved by the always-stable doubling scan (only
  products of decays <= 1). Sub-block end states are joined by the same doubling scan.
* Tokens are processed ``chunk`` at a time, carrying the state, so memory stays at a few chunk
  tensors however long the sequence is; the backward pass recomputes each chunk from its stored
  start state and runs the adjoint recurrence backwards in time (the same scan on flipped
  inputs). Autograd never sees the per-token states.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SUB_SIZES = (32, 16, 8, 4)
"""Tokens per sub-block of the factorised form, tried largest first (fewer, bigger operations)."""

SUB = SUB_SIZES[0]
"""Sequences are padded to, and chunks cut at, multiples of the largest sub-block."""

LOG_LIMIT = 60.0
"""Largest accumulated |delta*A| inside one sub-block for which the float32 form is trusted."""

CHUNK_ELEMENTS = 1 << 22
"""Target number of state elements (tokens x channels x d_state) processed per chunk."""


def _doubling_scan(decay: torch.Tensor, inputs: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """Inclusive scan ``h_k = decay_k h_{k-1} + inputs_k`` along dim 0 by recursive doubling.

    Only multiplies decays in (0, 1], so it cannot overflow whatever the step sizes.
    """
    states = inputs.clone()
    states[0].addcmul_(decay[0], h0)
    decay = decay.clone()
    length = states.shape[0]
    step = 1
    while step < length:
        shifted = states[:-step] * decay[step:]
        states[step:] += shifted
        if 2 * step < length:
            decay[step:] = decay[step:] * decay[:-step]
        step *= 2
    return states


def _running_sum_(blocks: torch.Tensor) -> torch.Tensor:
    """In-place cumulative sum along dim 1 of a (K, SUB, ...) tensor.

    Row-by-row adds over contiguous rows: about twice as fast on CPU as ``torch.cumsum`` along a
    non-last dimension, which walks the tensor with a stride.
    """
    for row in range(1, blocks.shape[1]):
        blocks[:, row].add_(blocks[:, row - 1])
    return blocks


def _pick_sub_block(step: torch.Tensor, decay_rate: torch.Tensor) -> int | None:
    """Largest sub-block size whose accumulated |delta*A| stays within ``LOG_LIMIT``, if any."""
    rate = step * decay_rate
    for sub in SUB_SIZES:
        if float(rate.view(-1, sub, rate.shape[1]).sum(1).max()) <= LOG_LIMIT:
            return sub
    return None


def _running_sum_reverse_(blocks: torch.Tensor) -> torch.Tensor:
    """In-place reverse cumulative sum along dim 1 (each row gets the sum of itself and later rows)."""
    for row in range(blocks.shape[1] - 2, -1, -1):
        blocks[:, row].add_(blocks[:, row + 1])
    return blocks


def _doubling_scan_reverse(
    decay: torch.Tensor, inputs: torch.Tensor, tail: torch.Tensor
) -> torch.Tensor:
    """``Y_k = inputs_k + decay_k Y_{k+1}`` along dim 0 from the end, ``Y_K = tail``."""
    return _doubling_scan(decay.flip(0), inputs.flip(0), tail).flip(0)


def _sub_block_weights(step: torch.Tensor, A: torch.Tensor, sub: int) -> torch.Tensor:
    """``exp(A * elapsed)`` with elapsed step counted from each sub-block's start (inclusive)."""
    blocks = step.shape[0] // sub
    elapsed = _running_sum_(step.reshape(blocks, sub, step.shape[1]).clone())
    return torch.mul(elapsed[..., None], A).exp_()


def _chunk_scan(
    step: torch.Tensor, A: torch.Tensor, inputs: torch.Tensor, h0: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """States ``h_t = exp(step_t A) h_{t-1} + inputs_t`` along dim 0, starting from ``h0``.

    step: (T, M) >= 0 with T a multiple of ``SUB``; A: (M, n) <= 0; inputs: (T, M, n); h0: (M, n).
    Because A does not change along the sequence, ``cumsum(step * A) = A * cumsum(step)``: the
    running sum is taken over (T, M) only, and the overflow check costs next to nothing.

    Returns the states (T, M, n) and the sub-block weights (K, sub, M, n) for the backward pass
    (None when the chunk needed the doubling scan).
    """
    length, channels = step.shape
    n = A.shape[1]
    sub = _pick_sub_block(step, A.abs().amax(dim=1))
    if sub is None:
        return _doubling_scan(torch.exp(step[..., None] * A), inputs, h0), None
    weight = _sub_block_weights(step, A, sub)
    local = _running_sum_(inputs.view(-1, sub, channels, n) / weight).mul_(weight)
    block_end = _doubling_scan(weight[:, -1], local[:, -1], h0)
    local[0].addcmul_(weight[0], h0[None])
    local[1:].addcmul_(weight[1:], block_end[:-1, None])
    return local.view(length, channels, n), weight


def _adjoint_scan(
    step: torch.Tensor,
    A: torch.Tensor,
    weight: torch.Tensor | None,
    adjoint_in: torch.Tensor,
    carry: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Adjoint states ``g_t = adjoint_in_t + exp(step_{t+1} A) g_{t+1}``, backwards in time.

    ``carry`` is ``exp(step A) g`` of the first token of the following chunk. With the forward
    sub-block weights w: ``g_t = (sum_{s>=t} w_s adjoint_in_s + w_end Y_next) / w_t``, where Y is
    the carry between sub-blocks; every ratio of weights is <= 1 or bounded like the forward's.
    Returns the adjoint states (T, M, n) and the carry for the previous chunk.
    """
    length, channels = step.shape
    n = A.shape[1]
    if weight is None:
        shifted = torch.zeros_like(step)
        shifted[1:] = step[1:].flip(0)
        decay = torch.exp(shifted[..., None] * A)
        adjoint = _doubling_scan(decay, adjoint_in.flip(0), carry).flip(0)
        return adjoint, torch.exp(step[0, :, None] * A) * adjoint[0]
    sub = weight.shape[1]
    summed = _running_sum_reverse_(adjoint_in.view(-1, sub, channels, n) * weight)
    block_carry = _doubling_scan_reverse(weight[:, -1], summed[:, 0], carry)  # Y_k per sub-block
    summed[:-1].addcmul_(weight[:-1, -1:], block_carry[1:, None])
    summed[-1].addcmul_(weight[-1, -1:], carry[None])
    return summed.div_(weight).view(length, channels, n), block_carry[0]


def _chunk_length(length: int, channels: int, n: int) -> int:
    tokens = max(SUB, (CHUNK_ELEMENTS // max(1, channels * n)) // SUB * SUB)
    return min(tokens, length)


def _to_time_major(t: torch.Tensor, dtype: torch.dtype, padded: int) -> torch.Tensor:
    """(batch, c, L) -> (L_padded, batch, c), zero padded at the end, contiguous."""
    out = t.new_zeros((padded, t.shape[0], t.shape[1]), dtype=dtype)
    out[: t.shape[2]] = t.permute(2, 0, 1)
    return out


def _from_time_major(t: torch.Tensor, length: int) -> torch.Tensor:
    return t[:length].permute(1, 2, 0)


class _Geometry:
    """Shapes, dtypes and the time-major copies both passes need."""

    def __init__(self, u, delta, A, B, C, delta_bias, delta_softplus):
        self.batch, self.d, self.length = u.shape
        self.n = A.shape[-1]
        self.work = torch.float64 if u.dtype == torch.float64 else torch.float32
        self.padded = -(-self.length // SUB) * SUB
        self.chunk = _chunk_length(self.padded, self.batch * self.d, self.n)
        raw = delta.to(self.work)
        if delta_bias is not None:
            raw = raw + delta_bias.to(self.work)[None, :, None]
        self.delta_raw = raw
        step = F.softplus(raw) if delta_softplus else raw
        self.step = _to_time_major(step, self.work, self.padded)  # padding: step 0 = identity
        self.u = _to_time_major(u, self.work, self.padded)
        self.B = _to_time_major(B, self.work, self.padded)
        self.C = _to_time_major(C, self.work, self.padded)
        A = A.to(self.work)
        self.A = A.expand(self.batch, self.d, self.n) if A.dim() == 2 else A
        self.A_flat = self.A.reshape(self.batch * self.d, self.n)

    def chunks(self):
        return [(s, min(s + self.chunk, self.padded)) for s in range(0, self.padded, self.chunk)]

    def chunk_terms(self, start: int, stop: int):
        """Step sizes and input terms of the recurrence for tokens [start, stop)."""
        step = self.step[start:stop]
        step_u = step * self.u[start:stop]
        inputs = step_u[..., None] * self.B[start:stop, :, None, :]
        return step, step_u, inputs


class _SelectiveScanTorch(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        geo = _Geometry(u, delta, A, B, C, delta_bias, delta_softplus)
        channels = geo.batch * geo.d
        y = u.new_empty((geo.padded, geo.batch, geo.d), dtype=geo.work)
        state = u.new_zeros((channels, geo.n), dtype=geo.work)
        starts = []
        for start, stop in geo.chunks():
            starts.append(state)
            step, _, inputs = geo.chunk_terms(start, stop)
            tokens = stop - start
            states, _ = _chunk_scan(
                step.view(tokens, channels), geo.A_flat, inputs.view(tokens, channels, geo.n), state
            )
            state = states[-1].clone()
            y[start:stop] = torch.einsum(
                "tbdn,tbn->tbd", states.view(tokens, geo.batch, geo.d, geo.n), geo.C[start:stop]
            )
        y = _from_time_major(y, geo.length)
        u_work = u.to(geo.work)
        if D is not None:
            y = y + D.to(geo.work)[None, :, None] * u_work
        out = y * F.silu(z.to(geo.work)) if z is not None else y
        ctx.delta_softplus = delta_softplus
        ctx.a_shape = A.shape
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, torch.stack(starts), y)
        return out.to(u.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        u, delta, A, B, C, D, z, delta_bias, starts, y = ctx.saved_tensors
        geo = _Geometry(u, delta, A, B, C, delta_bias, ctx.delta_softplus)
        work, batch, d, n = geo.work, geo.batch, geo.d, geo.n
        channels = batch * d
        grad_out = grad_out.to(work)
        grad_z = None
        if z is not None:
            z_work = z.to(work)
            gate = torch.sigmoid(z_work)
            grad_z = (grad_out * y * gate * (1 + z_work * (1 - gate))).to(z.dtype)
            grad_y = grad_out * z_work * gate
        else:
            grad_y = grad_out
        u_work = u.to(work)
        grad_D = None
        grad_u = torch.zeros((geo.padded, batch, d), dtype=work, device=u.device)
        if D is not None:
            grad_D = (grad_y * u_work).sum(dim=(0, 2)).to(D.dtype)
            grad_u[: geo.length] = (grad_y * D.to(work)[None, :, None]).permute(2, 0, 1)
        grad_y = _to_time_major(grad_y, work, geo.padded)
        grad_step = torch.zeros((geo.padded, batch, d), dtype=work, device=u.device)
        grad_B = torch.zeros((geo.padded, batch, n), dtype=work, device=u.device)
        grad_C = torch.zeros((geo.padded, batch, n), dtype=work, device=u.device)
        grad_A = torch.zeros((batch, d, n), dtype=work, device=u.device)
        grad_A_flat = grad_A.view(channels, 1, n)
        carry = u.new_zeros((channels, n), dtype=work)
        chunks = geo.chunks()
        for index in range(len(chunks) - 1, -1, -1):
            start, stop = chunks[index]
            tokens = stop - start
            step, step_u, inputs = geo.chunk_terms(start, stop)
            step_flat = step.view(tokens, channels)
            inputs = inputs.view(tokens, channels, n)
            states, weight = _chunk_scan(step_flat, geo.A_flat, inputs, starts[index])
            g_y = grad_y[start:stop]
            adjoint_in = (g_y[..., None] * geo.C[start:stop, :, None, :]).view(tokens, channels, n)
            grad_h, carry = _adjoint_scan(step_flat, geo.A_flat, weight, adjoint_in, carry)
            # d/d(step*A) of h_t = exp(step_t A) h_{t-1} + inputs_t is exp(step_t A) h_{t-1}
            # = h_t - inputs_t: no shifted copy of the states is needed.
            grad_log = torch.sub(states, inputs, out=inputs).mul_(grad_h)
            rows = tokens * batch
            # Reductions as batched matrix products over contiguous views: no permuted copies.
            grad_A_flat += torch.bmm(step_flat.t().unsqueeze(1), grad_log.transpose(0, 1))
            grad_step_u = torch.einsum(
                "tbdn,tbn->tbd", grad_h.view(tokens, batch, d, n), geo.B[start:stop]
            )
            grad_step[start:stop] = (grad_log * geo.A_flat).sum(-1).view(tokens, batch, d)
            grad_step[start:stop] += grad_step_u * geo.u[start:stop]
            grad_u[start:stop] += grad_step_u * step
            grad_B[start:stop] = torch.bmm(step_u.view(rows, 1, d), grad_h.view(rows, d, n)).view(
                tokens, batch, n
            )
            grad_C[start:stop] = torch.bmm(g_y.reshape(rows, 1, d), states.view(rows, d, n)).view(
                tokens, batch, n
            )
        grad_delta = _from_time_major(grad_step, geo.length)
        if ctx.delta_softplus:
            grad_delta = grad_delta * torch.sigmoid(geo.delta_raw)
        grad_bias = (
            grad_delta.sum(dim=(0, 2)).to(delta_bias.dtype) if delta_bias is not None else None
        )
        if len(ctx.a_shape) == 2:
            grad_A = grad_A.sum(0)
        return (
            _from_time_major(grad_u, geo.length).to(u.dtype),
            grad_delta.to(delta.dtype),
            grad_A.to(A.dtype),
            _from_time_major(grad_B, geo.length).to(B.dtype),
            _from_time_major(grad_C, geo.length).to(C.dtype),
            grad_D,
            grad_z,
            grad_bias,
            None,
        )


def selective_scan_torch(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
) -> torch.Tensor:
    """The portable backend; arguments as :func:`segresmamba.selective_scan`."""
    return _SelectiveScanTorch.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus)

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
  start state and runs the adjoint recurrence backwards in time with the same sub-block weights.
  Autograd never sees the per-token states.
* The native layout is token-major, (batch, L, channels), which is what ``nn.Linear`` produces:
  ToM feeds its projections straight in, with no transposed copies. The mamba-ssm-shaped entry
  point (batch, channels, L) transposes around it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SUB_SIZES = (16, 8, 4)
"""Tokens per sub-block of the factorised form, tried largest first (fewer, bigger operations)."""

SUB = SUB_SIZES[0]
"""Sequences are padded to, and chunks cut at, multiples of the largest sub-block."""

LOG_LIMIT = 60.0
"""Largest accumulated |delta*A| inside one sub-block for which the float32 form is trusted."""

CHUNK_ELEMENTS = 1 << 20
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
    step: torch.Tensor, A: torch.Tensor, step_u: torch.Tensor, B: torch.Tensor, h0: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """States ``h_t = exp(step_t A) h_{t-1} + step_u_t B_t`` along dim 0, starting from ``h0``.

    step, step_u: (T, M) with step >= 0 and T a multiple of ``SUB``; A: (M, n) <= 0; B: (T, n);
    h0: (M, n). Because A does not change along the sequence, ``cumsum(step * A) =
    A * cumsum(step)``: the running sum is taken over (T, M) only, and the overflow check costs
    next to nothing. The input term is never materialised: B / weight is scaled in place.

    Returns the states (T, M, n) and the sub-block weights (K, sub, M, n) for the backward pass
    (None when the chunk needed the doubling scan).
    """
    length, channels = step.shape
    n = A.shape[1]
    sub = _pick_sub_block(step, A.abs().amax(dim=1))
    if sub is None:
        inputs = step_u[..., None] * B[:, None, :]
        return _doubling_scan(torch.exp(step[..., None] * A), inputs, h0), None
    weight = _sub_block_weights(step, A, sub)
    local = torch.div(B.view(-1, sub, 1, n), weight).mul_(step_u.view(-1, sub, channels, 1))
    local = _running_sum_(local).mul_(weight)
    block_end = _doubling_scan(weight[:, -1], local[:, -1], h0)
    local[0].addcmul_(weight[0], h0[None])
    local[1:].addcmul_(weight[1:], block_end[:-1, None])
    return local.view(length, channels, n), weight


def _adjoint_scan(
    step: torch.Tensor,
    A: torch.Tensor,
    weight: torch.Tensor | None,
    grad_y: torch.Tensor,
    C: torch.Tensor,
    carry: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Adjoint states ``g_t = grad_y_t C_t + exp(step_{t+1} A) g_{t+1}``, backwards in time.

    ``carry`` is ``exp(step A) g`` of the first token of the following chunk. With the forward
    sub-block weights w: ``g_t = (sum_{s>=t} w_s grad_y_s C_s + w_end Y_next) / w_t``, where Y is
    the carry between sub-blocks; every ratio of weights is <= 1 or bounded like the forward's.
    grad_y: (T, M); C: (T, n). Returns the adjoint states (T, M, n) and the carry for the
    previous chunk.
    """
    length, channels = step.shape
    n = A.shape[1]
    if weight is None:
        adjoint_in = grad_y[..., None] * C[:, None, :]
        shifted = torch.zeros_like(step)
        shifted[1:] = step[1:].flip(0)
        decay = torch.exp(shifted[..., None] * A)
        adjoint = _doubling_scan(decay, adjoint_in.flip(0), carry).flip(0)
        return adjoint, torch.exp(step[0, :, None] * A) * adjoint[0]
    sub = weight.shape[1]
    summed = torch.mul(C.view(-1, sub, 1, n), weight).mul_(grad_y.view(-1, sub, channels, 1))
    summed = _running_sum_reverse_(summed)
    block_carry = _doubling_scan_reverse(weight[:, -1], summed[:, 0], carry)  # Y_k per sub-block
    summed[:-1].addcmul_(weight[:-1, -1:], block_carry[1:, None])
    summed[-1].addcmul_(weight[-1, -1:], carry[None])
    return summed.div_(weight).view(length, channels, n), block_carry[0]


def _chunk_length(channels: int, n: int) -> int:
    """Tokens per chunk: a multiple of ``SUB`` holding about ``CHUNK_ELEMENTS`` state elements."""
    return max(SUB, (CHUNK_ELEMENTS // max(1, channels * n)) // SUB * SUB)


def _padded(t: torch.Tensor, length: int) -> torch.Tensor:
    """Zero-pad dim 0 to ``length``; padded steps are 0 (no decay) and inputs 0, so no effect."""
    if t.shape[0] == length:
        return t
    out = t.new_zeros((length, *t.shape[1:]))
    out[: t.shape[0]] = t
    return out


class _Sequence:
    """One batch element's inputs, cut into chunks for both passes."""

    def __init__(self, u, delta, B, C, z, delta_bias, delta_softplus, work):
        self.u, self.delta, self.B, self.C, self.z = u, delta, B, C, z
        self.bias = delta_bias.to(work) if delta_bias is not None else None
        self.softplus = delta_softplus
        self.work = work
        self.length, self.d = u.shape
        self.chunk = _chunk_length(self.d, B.shape[-1])

    def chunks(self) -> list[tuple[int, int]]:
        return [(s, min(s + self.chunk, self.length)) for s in range(0, self.length, self.chunk)]

    def terms(self, start: int, stop: int, pad: bool = True):
        """Raw step, step, u, B, C for tokens [start, stop), and step, step*u and B padded to a
        multiple of ``SUB`` (padded tokens have step 0 and input 0: they change nothing)."""
        padded = -(-(stop - start) // SUB) * SUB
        raw = self.delta[start:stop].to(self.work)
        if self.bias is not None:
            raw = raw + self.bias
        step = F.softplus(raw) if self.softplus else raw
        u = self.u[start:stop].to(self.work)
        B = self.B[start:stop].to(self.work)
        C = self.C[start:stop].to(self.work)
        if not pad:
            return raw, step, u, B, C, None
        padded_terms = tuple(_padded(t, padded) for t in (step, step * u, B))
        return raw, step, u, B, C, padded_terms


class _SelectiveScanTokens(torch.autograd.Function):
    """The scan on token-major tensors: u, delta, z (batch, L, d); B, C (batch, L, n)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        batch, length, d = u.shape
        work = torch.float64 if u.dtype == torch.float64 else torch.float32
        A_work = A.to(work).expand(batch, d, A.shape[-1])
        D_work = D.to(work) if D is not None else None
        y = torch.empty((batch, length, d), dtype=work, device=u.device)
        starts = []
        for b in range(batch):
            seq = _Sequence(u[b], delta[b], B[b], C[b], None, delta_bias, delta_softplus, work)
            state = u.new_zeros((d, A.shape[-1]), dtype=work)
            for start, stop in seq.chunks():
                starts.append(state)
                tokens = stop - start
                _, _, u_c, _, C_c, padded_terms = seq.terms(start, stop)
                states, _ = _chunk_scan(padded_terms[0], A_work[b], *padded_terms[1:], state)
                state = states[tokens - 1].clone()
                y_c = torch.einsum("tdn,tn->td", states[:tokens], C_c)
                if D_work is not None:
                    y_c.addcmul_(u_c, D_work)
                if z is not None:
                    y_c.mul_(F.silu(z[b, start:stop].to(work)))
                y[b, start:stop] = y_c
        ctx.delta_softplus = delta_softplus
        ctx.A_batched = A.dim() == 3
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, torch.stack(starts))
        return y.to(u.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        u, delta, A, B, C, D, z, delta_bias, starts = ctx.saved_tensors
        batch, length, d = u.shape
        n = A.shape[-1]
        work = torch.float64 if u.dtype == torch.float64 else torch.float32
        A_work = A.to(work).expand(batch, d, n)
        D_work = D.to(work) if D is not None else None
        new = dict(dtype=work, device=u.device)
        grad_u = torch.empty((batch, length, d), **new)
        grad_delta = torch.empty((batch, length, d), **new)
        grad_B = torch.empty((batch, length, n), **new)
        grad_C = torch.empty((batch, length, n), **new)
        grad_z = torch.empty((batch, length, d), **new) if z is not None else None
        grad_A = torch.zeros((batch, d, 1, n), **new)
        grad_D = torch.zeros(d, **new)
        index = len(starts)
        for b in range(batch - 1, -1, -1):
            seq = _Sequence(u[b], delta[b], B[b], C[b], None, delta_bias, ctx.delta_softplus, work)
            carry = u.new_zeros((d, n), dtype=work)
            for start, stop in reversed(seq.chunks()):
                index -= 1
                tokens = stop - start
                raw, step, u_c, B_c, C_c, (step_p, step_u_p, B_p) = seq.terms(start, stop)
                states, weight = _chunk_scan(step_p, A_work[b], step_u_p, B_p, starts[index])
                grad = grad_out[b, start:stop].to(work)
                if z is not None:
                    z_c = z[b, start:stop].to(work)
                    gate = torch.sigmoid(z_c)
                    y_pre = torch.einsum("tdn,tn->td", states[:tokens], C_c)
                    if D_work is not None:
                        y_pre.addcmul_(u_c, D_work)
                    grad_z[b, start:stop] = grad * y_pre * gate * (1 + z_c * (1 - gate))
                    grad = grad * z_c * gate
                if D_work is not None:
                    grad_D += (grad * u_c).sum(0)
                    grad_u[b, start:stop] = grad * D_work
                else:
                    grad_u[b, start:stop] = 0
                padded = step_p.shape[0]
                grad_h, carry = _adjoint_scan(
                    step_p, A_work[b], weight, _padded(grad, padded), _padded(C_c, padded), carry
                )
                grad_h, states = grad_h[:tokens], states[:tokens]
                # d/d(step*A) of h_t = exp(step_t A) h_{t-1} + step_u_t B_t is
                # exp(step_t A) h_{t-1} = h_t - step_u_t B_t: no shifted copy of the states.
                grad_log = torch.addcmul(
                    states, step_u_p[:tokens, :, None], B_c[:, None, :], value=-1
                ).mul_(grad_h)
                # Reductions as batched products over contiguous views: no permuted copies.
                grad_A[b] += torch.bmm(step.t().unsqueeze(1), grad_log.transpose(0, 1))
                grad_step_u = torch.einsum("tdn,tn->td", grad_h, B_c)
                grad_step = (grad_log * A_work[b]).sum(-1).addcmul_(grad_step_u, u_c)
                grad_u[b, start:stop] += grad_step_u * step
                grad_B[b, start:stop] = torch.bmm(step_u_p[:tokens, None, :], grad_h)[:, 0]
                grad_C[b, start:stop] = torch.bmm(grad[:, None, :], states)[:, 0]
                if ctx.delta_softplus:
                    grad_step.mul_(torch.sigmoid(raw))
                grad_delta[b, start:stop] = grad_step
        grad_A = grad_A[:, :, 0]
        if not ctx.A_batched:
            grad_A = grad_A.sum(0)
        grad_bias = grad_delta.sum(dim=(0, 1)) if delta_bias is not None else None
        return (
            grad_u.to(u.dtype),
            grad_delta.to(delta.dtype),
            grad_A.to(A.dtype),
            grad_B.to(B.dtype),
            grad_C.to(C.dtype),
            grad_D.to(D.dtype) if D is not None else None,
            grad_z.to(z.dtype) if z is not None else None,
            grad_bias.to(delta_bias.dtype) if delta_bias is not None else None,
            None,
        )


def selective_scan_tokens_torch(
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
    """The portable backend on token-major tensors: u, delta, z (batch, L, d); B, C (batch, L, n)."""
    return _SelectiveScanTokens.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus)


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
    """The portable backend with mamba-ssm's shapes; arguments as :func:`segresmamba.selective_scan`."""

    def tokens(t):
        return t.transpose(1, 2).contiguous() if t is not None else None

    out = selective_scan_tokens_torch(
        tokens(u),
        tokens(delta),
        A,
        tokens(B),
        tokens(C),
        D,
        tokens(z),
        delta_bias,
        delta_softplus,
    )
    return out.transpose(1, 2).contiguous()

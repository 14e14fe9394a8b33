"""Matrix products for a population: K independent LSTMs run as one batch.

A population of K members is a batch of K * B rows, member k owning rows
[k * B, (k + 1) * B) of every (..., K * B, width) tensor, and each weight carries a
leading member dimension: W_hh (K, 4H, P) instead of (4H, P). Element-wise work is
then the same as for one model with batch K * B; only the matrix products differ:
each member's rows meet its own weights. These helpers do the products for both
layouts (2-D weight: one model; 3-D: a population), differentiably, for the reference
and the differentiable backward; the fused backend's in-place products are in
``fused/products.py``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def members_of(weight: Tensor) -> int:
    """K for a population's weight (K, rows, cols); 1 for a single model's (rows, cols)."""
    return weight.shape[0] if weight.dim() == 3 else 1


def by_member(rows: Tensor, members: int) -> Tensor:
    """(..., K * B, W) viewed as (..., K, B, W)."""
    return rows.unflatten(-2, (members, rows.shape[-2] // members))


def rows_times(a: Tensor, weight: Tensor) -> Tensor:
    """a @ weight per member: a (..., N, X), weight (X, Y) or (K, X, Y) -> (..., N, Y).
    Differentiable."""
    if weight.dim() == 2:
        return a @ weight
    return torch.einsum("...kbx,kxy->...kby", by_member(a, weight.shape[0]), weight).flatten(-3, -2)


def rows_linear(a: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear`` per member: a (..., N, X) -> a @ weight^T + bias, weight (Y, X) or
    (K, Y, X), bias (Y,) or (K, Y). Differentiable."""
    if weight.dim() == 2:
        return torch.nn.functional.linear(a, weight, bias)
    k = weight.shape[0]
    out = torch.einsum("...kbx,kyx->...kby", by_member(a, k), weight)
    if bias is not None:
        out = out + bias.unsqueeze(-2)
    return out.flatten(-3, -2)


def rows_outer(d: Tensor, v: Tensor, members: int) -> Tensor:
    """sum over steps and rows of d^T v, per member: d (..., N, G), v (..., N, X) -> (G, X),
    or (K, G, X) for a population of ``members`` > 1 (then a weight's gradient)."""
    if members == 1:
        # reshape, not flatten: torch's older vmap, which batches gradients for
        # is_grads_batched=True, has no rule for flatten (nor has rows_sum's)
        return d.reshape(-1, d.shape[-1]).t() @ v.reshape(-1, v.shape[-1])
    return torch.einsum("...kbg,...kbx->kgx", by_member(d, members), by_member(v, members))


def rows_sum(d: Tensor, members: int) -> Tensor:
    """d (..., N, G) summed over steps and rows: (G,), or (K, G) per member (a bias gradient)."""
    if members == 1:
        return d.reshape(-1, d.shape[-1]).sum(0)
    # Each member's rows summed as one model's would be (same shape, same order), so a
    # population member's bias gradient is bitwise its lone twin's.
    per_member = by_member(d, members)
    return torch.stack([per_member[..., k, :, :].flatten(0, -2).sum(0) for k in range(members)])

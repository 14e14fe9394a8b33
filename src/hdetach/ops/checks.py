"""Validation of the core op's arguments: one place, run once per call before any work."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def check_batch_sizes(
    batch_sizes: Sequence[int] | Tensor | None, steps: int, batch: int
) -> tuple[int, ...] | None:
    """Validate the packed layout; return it as a tuple of ints, or None when every row is full."""
    if batch_sizes is None:
        return None
    sizes = tuple(int(n) for n in batch_sizes)
    if len(sizes) != steps:
        raise ValueError(f"batch_sizes must have one entry per step ({steps}), got {len(sizes)}")
    if sizes[0] != batch or any(b > a for a, b in zip(sizes, sizes[1:])) or sizes[-1] < 1:
        raise ValueError(
            f"batch_sizes must be non-increasing, start at the batch size {batch} and stay >= 1, "
            f"got {list(sizes)}"
        )
    return None if sizes[-1] == batch else sizes


def check_detach_mask(mask: Tensor | None, steps: int, batch: int, device: torch.device) -> None:
    """A per-layer mask: None, or bool of shape (T,) or (T, B) on ``device``."""
    if mask is None:
        return
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
        raise TypeError(f"detach_mask must be a torch.bool tensor, got {got}")
    if tuple(mask.shape) not in ((steps,), (steps, batch)):
        raise ValueError(
            f"detach_mask must have shape ({steps},) or ({steps}, {batch}) "
            f"(steps[, batch]), got {tuple(mask.shape)}"
        )
    if mask.device != device:
        raise ValueError(f"detach_mask must be on {device} like the input, got {mask.device}")


def check_same_dtype_and_device(first: str, tensors: dict[str, Tensor | None]) -> None:
    """Every tensor given must share the dtype and device of the one named ``first``.

    A RuntimeError, as torch's own ops (``torch.lstm`` among them) raise for tensors that
    disagree; so is a shape that does not fit (``check_shape``). The options, the packed
    layout and the detach masks, hdetach's own arguments, are ValueErrors and TypeErrors.
    """
    like = tensors[first]
    for name, tensor in tensors.items():
        if tensor is not None and (tensor.dtype != like.dtype or tensor.device != like.device):
            raise RuntimeError(
                f"{name} must be {like.dtype} on {like.device} like {first}, "
                f"got {tensor.dtype} on {tensor.device}"
            )


def check_shape(name: str, tensor: Tensor, expected: tuple[int, ...]) -> None:
    if tuple(tensor.shape) != expected:
        raise RuntimeError(f"{name} must have shape {expected}, got {tuple(tensor.shape)}")


def check_recurrence(
    gates_shape: Sequence[int],
    h0: Tensor,
    c0: Tensor,
    weight_hh: Tensor,
    weight_hr: Tensor | None,
    detach_mask: Tensor | None,
    device: torch.device,
) -> None:
    """Shapes of the state and weights against the gates' (T, B, 4H), and the mask.

    Without a projection the recurrent state h has size H; with ``weight_hr`` (P, H) it
    has size P: h0 is (B, P) and weight_hh (4H, P), while c0 stays (B, H).
    """
    steps, batch, four_hidden = gates_shape
    if four_hidden % 4 or four_hidden == 0 or steps == 0:
        raise RuntimeError(
            f"the gates must have shape (T, B, 4H) with T, H >= 1, got {tuple(gates_shape)}"
        )
    hidden = four_hidden // 4
    lead = member_dims(weight_hh, batch)
    if weight_hr is not None and (
        weight_hr.dim() != 2 + len(lead) or weight_hr.shape[-1] != hidden
    ):
        raise RuntimeError(
            f"weight_hr must have shape ({''.join(f'{k}, ' for k in lead)}P, {hidden}) "
            "(proj_size, hidden_size), "
            f"got {tuple(weight_hr.shape)}"
        )
    state = hidden if weight_hr is None else weight_hr.shape[-2]
    check_shape("h0", h0, (batch, state))
    check_shape("c0", c0, (batch, hidden))
    check_shape("weight_hh", weight_hh, (*lead, four_hidden, state))
    if weight_hr is not None:
        check_shape("weight_hr", weight_hr, (*lead, state, hidden))
    check_detach_mask(detach_mask, steps, batch, device)


def member_dims(weight_hh: Tensor, batch: int) -> tuple[int, ...]:
    """``(K,)`` when ``weight_hh`` is a population's (K, 4H, P), else ``()``; a population's
    batch must be K blocks of B rows (member k owns rows [k * B, (k + 1) * B))."""
    if weight_hh.dim() != 3:
        return ()
    members = weight_hh.shape[0]
    if members == 0 or batch % members:
        raise ValueError(
            f"a population of {members} members (weight_hh of shape {tuple(weight_hh.shape)}) "
            f"needs a batch of K * B rows, member k's rows at [k * B, (k + 1) * B); "
            f"got {batch} rows"
        )
    return (members,)


def check_no_packing_in_population(batch_sizes, weight_hh: Tensor) -> None:
    if batch_sizes is not None and weight_hh.dim() == 3:
        raise ValueError(
            "batch_sizes: packed sequences are not supported in a population (weights with a "
            "leading member dimension); pad the sequences instead"
        )

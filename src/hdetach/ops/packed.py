"""The packed layout shared by the backends: per-step active rows, per-row lengths."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def sequence_lengths(batch_sizes: Sequence[int], batch: int, device: torch.device) -> Tensor:
    """(B,) int64 number of steps of each row, from non-increasing per-step ``batch_sizes``."""
    sizes = torch.tensor(list(batch_sizes), device=device)
    return (sizes.unsqueeze(1) > torch.arange(batch, device=device)).sum(0)


def steps_of(block: Tensor, sizes: Sequence[int] | None) -> Sequence[Tensor]:
    """Views of ``block[k]`` (K, B, ...) for each step, cut to the active rows when packed."""
    if sizes is None:
        return block.unbind(0)
    return [block[k, :n] for k, n in enumerate(sizes)]


def rows_at(batch_sizes: Sequence[int] | None, t: int, batch: int) -> int:
    """Active rows at step t: ``batch_sizes[t]``, or the whole batch when not packed."""
    return batch if batch_sizes is None else batch_sizes[t]

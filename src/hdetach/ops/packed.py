"""The packed layout shared by the backends: per-step active rows, per-row lengths."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def sequence_lengths(batch_sizes: Sequence[int], batch: int, device: torch.device) -> Tensor:
    """(B,) int64 number of steps of each row, from non-increasing per-step ``batch_sizes``."""
    sizes = torch.tensor(list(batch_sizes), device=device)
    return (sizes.unsqueeze(1) > torch.arange(batch, device=device)).sum(0)

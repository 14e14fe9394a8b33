"""Adding task (Hochreiter & Schmidhuber 1997), a standard long-dependency benchmark.

Each step carries two inputs: a value drawn from U(0, 1) and a marker in {0, 1}.
Exactly two steps are marked, one in the first half and one in the second; the
target is the sum of their values, predicted at the last step (MSE). Predicting
the constant 1 scores an MSE of about 0.167.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from hdetach.experiments.tasks.definitions import ADDING_WIDTHS, Adding
from hdetach.experiments.tasks.streams import data_rng


def adding_sequences(n: int, T: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """x (n, T, 2) = [value, marker], y (n,) = sum of the two marked values."""
    if T < 2:
        raise ValueError(f"T must be >= 2 for the adding task, got {T}")
    values = torch.rand(n, T, generator=gen)
    half = T // 2
    first = torch.randint(0, half, (n,), generator=gen)
    second = torch.randint(half, T, (n,), generator=gen)
    marker = torch.zeros(n, T)
    rows = torch.arange(n)
    marker[rows, first] = 1.0
    marker[rows, second] = 1.0
    return torch.stack([values, marker], dim=-1), (values * marker).sum(1)


class AddingTask(Adding):
    """The adding task's data: each split's sequences, drawn from the seed."""

    input_size, output_size = ADDING_WIDTHS

    def __init__(self, T: int, n_train: int, n_val: int, n_test: int, seed: int):
        self.T = T
        self.data = {
            split: adding_sequences(n, T, data_rng(seed, f"adding/{split}"))
            for split, n in (("train", n_train), ("val", n_val), ("test", n_test))
        }

    @classmethod
    def from_config(cls, cfg: Any) -> AddingTask:
        return cls(cfg.T, cfg.n_train, cfg.n_val, cfg.n_test, cfg.seed)

    def size(self, split: str) -> int:
        return self.data[split][1].shape[0]

    def batch(self, split: str, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.data[split]
        return x[idx], y[idx]

    def loss_and_metrics(self, out, y):
        loss = F.mse_loss(out.squeeze(-1), y)
        return loss, {"loss": loss.detach(), "mse": loss.detach()}

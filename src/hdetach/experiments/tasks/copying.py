"""Copying task (Hochreiter & Schmidhuber 1997; the h-detach paper's protocol).

Tokens: 0 blank, 1..8 symbols, 9 delimiter. A sequence of length T+20 is
10 symbols, T-1 blanks, the delimiter, 10 blanks; the target is T+10 blanks
followed by the same 10 symbols. The loss is averaged over all T+20 steps, the
accuracy is measured on the last 10 steps only.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from hdetach.experiments.tasks.definitions import (
    COPY_CLASSES,
    COPY_SYMBOLS,
    COPY_TOKENS,
    ENCODINGS,
    Copying,
    copy_length,
)
from hdetach.experiments.tasks.streams import data_rng

BLANK, DELIM = 0, 9  # tokens 1..8 are the symbols


def random_symbols(n: int, gen: torch.Generator) -> torch.Tensor:
    """(n, 10) int64 symbols drawn uniformly from {1..8}."""
    return torch.randint(1, 9, (n, COPY_SYMBOLS), generator=gen)


def copying_tokens(symbols: torch.Tensor, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Input and target token sequences, both (B, T+20) int64, for symbols (B, 10)."""
    B = symbols.shape[0]
    x = torch.full((B, copy_length(T)), BLANK, dtype=torch.long)
    x[:, :COPY_SYMBOLS] = symbols
    x[:, COPY_SYMBOLS + T - 1] = DELIM
    y = torch.full_like(x, BLANK)
    y[:, -COPY_SYMBOLS:] = symbols
    return x, y


def encode(tokens: torch.Tensor, encoding: str) -> torch.Tensor:
    """(B, L) tokens -> (B, L, 1) raw scalar floats (the paper's choice) or (B, L, 10) one-hot."""
    if encoding == "scalar":
        return tokens.float().unsqueeze(-1)
    if encoding == "onehot":
        return F.one_hot(tokens, COPY_TOKENS).float()
    raise ValueError(f"input_encoding must be one of {ENCODINGS}, got {encoding!r}")


def copy_loss_and_metrics(
    logits: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """logits (B, L, 9), y (B, L): CE over all L steps, accuracy over the last 10
    (metrics as detached 0-d tensors)."""
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    pred = logits[:, -COPY_SYMBOLS:].argmax(-1)
    acc = (pred == y[:, -COPY_SYMBOLS:]).float().mean()
    return loss, {"loss": loss.detach(), "acc": acc}


class CopyingTask(Copying):
    """The copying task's data: each split's symbols, drawn from the seed."""

    output_size = COPY_CLASSES

    def __init__(self, T: int, encoding: str, n_train: int, n_val: int, n_test: int, seed: int):
        if T < 1:
            raise ValueError(f"T must be >= 1, got {T}")
        self.T, self.encoding = T, encoding
        self.input_size = encode(torch.zeros(1, 1, dtype=torch.long), encoding).shape[-1]
        # Only the symbols are stored; full sequences are built per minibatch.
        self.symbols = {
            split: random_symbols(n, data_rng(seed, f"copy/{split}"))
            for split, n in (("train", n_train), ("val", n_val), ("test", n_test))
        }

    @classmethod
    def from_config(cls, cfg: Any) -> CopyingTask:
        return cls(cfg.T, cfg.input_encoding, cfg.n_train, cfg.n_val, cfg.n_test, cfg.seed)

    def size(self, split: str) -> int:
        return self.symbols[split].shape[0]

    def batch(self, split: str, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = copying_tokens(self.symbols[split][idx], self.T)
        return encode(x, self.encoding), y

    def loss_and_metrics(self, out, y):
        return copy_loss_and_metrics(out, y)

"""The model trained on a task, its optimizer and its gradient clipping.

A task declares the shape its model needs (``input_size``, ``output_size``, ``readout``)
or builds its own (captioning's decoder); this module builds the first kind, so that the
tasks need not import the model (see ``Task.make_model``)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

import hdetach
from hdetach.experiments.options import Config
from hdetach.experiments.tasks import Task


class SequenceModel(nn.Module):
    """An ``hdetach.LSTM`` and a linear read-out, at every step or at the last one.

    x (B, L, input_size) -> (B, L, output_size) if readout == "all" else (B, output_size).
    """

    def __init__(self, cfg: Config, task: Task):
        super().__init__()
        self.readout = task.readout
        self.lstm = hdetach.LSTM(
            task.input_size,
            cfg.hidden_size,
            num_layers=cfg.num_layers,
            batch_first=True,
            p_detach=cfg.p_detach,
            detach_scope=cfg.detach_scope,
            detach_path=cfg.detach_path,
            layer_masks=cfg.layer_masks,
            backend=cfg.backend,
        )
        self.head = nn.Linear(cfg.hidden_size, task.output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.read_out(out)

    def read_out(self, out: torch.Tensor) -> torch.Tensor:
        """The head applied to the LSTM's output (B, L, hidden_size), where ``readout`` says."""
        return self.head(out if self.readout == "all" else out[:, -1])


def make_model(cfg: Config, task: Task) -> nn.Module:
    """The model a run of ``task`` trains: the task's own where it has one, else the
    ``SequenceModel`` of the task's declared widths and readout."""
    own = task.make_model(cfg)
    return SequenceModel(cfg, task) if own is None else own


def make_optimizer(cfg: Config, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """The optimizer named by ``cfg.optimizer`` (one of config.OPTIMIZERS)."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


def clip_gradients(params: list[nn.Parameter], clip: str, clip_value: float) -> torch.Tensor:
    """Clip the gradients in place; returns their total norm *before* clipping (a 0-d
    tensor on their device, non-finite if any gradient is), whatever the mode."""
    # max_norm=inf computes the norm without changing the gradients.
    norm = nn.utils.clip_grad_norm_(params, clip_value if clip == "norm" else math.inf)
    if clip == "value":
        nn.utils.clip_grad_value_(params, clip_value)
    return norm

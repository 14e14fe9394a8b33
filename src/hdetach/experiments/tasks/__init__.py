"""The tasks (``copying``, ``adding``, ``mnist``; captioning's is in ``captioning.task``), and
here the interface the one training loop runs and the data streams' generators. The
registry of task names is ``tasks.registry``, their fixed sizes (which config checks
before any task is built) ``tasks.sizes``; this module imports no task, so that every
task module can import it.

Every task holds its data splits in memory and hands out minibatches by index:
``task.batch(split, idx) -> (x, y)`` with ``x`` of shape (B, L, input_size).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class Task:
    """Base class. Subclasses set the attributes below and implement ``size``, ``batch``
    and ``loss_and_metrics``. Splits are named "train", "val" and "test"."""

    input_size: int
    output_size: int
    readout: str  # "all": the model predicts at every step; "last": only at the final step
    metric: str  # the validation metric used for model selection
    higher_is_better: bool
    chance: float | None = None  # the metric of a uniform guess, where there is one
    sample_with_replacement: bool  # True: an epoch is a fixed number of random minibatches

    def size(self, split: str) -> int:
        raise NotImplementedError

    def batch(self, split: str, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def loss_and_metrics(
        self, out: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        """Mean loss over the batch (differentiable) and the batch's metrics, including
        "loss" and ``metric``: detached 0-d tensors on the output's device, so that the
        training loop reads them off the device only when it logs."""
        raise NotImplementedError

    def corpus_metrics(
        self, model: torch.nn.Module, split: str, batch_size: int, device: str
    ) -> dict[str, float]:
        """Metrics of a whole split that are not means over examples (e.g. captioning's
        CIDEr), added to the averaged ones at each evaluation; the model is in eval mode."""
        return {}

    def make_model(self, cfg: Any) -> torch.nn.Module:
        """The model trained on this task: it has an ``lstm`` whose ``p_detach`` the loop
        sets at each epoch, and takes ``x`` of ``batch`` to what ``loss_and_metrics`` reads."""
        raise NotImplementedError


def data_rng(seed: int, stream: str) -> torch.Generator:
    """A torch generator for one data stream (split), independent of the others and of
    the training RNGs, so that the data are fixed by the seed alone."""
    # Hash the pair through numpy's SeedSequence so (seed, stream) pairs never collide
    # the way seed + offset schemes do (seed 1's val set == seed 2's train set).
    key = [seed, *stream.encode()]
    return torch.Generator().manual_seed(int(np.random.SeedSequence(key).generate_state(1)[0]))

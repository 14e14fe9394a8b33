"""The paper's benchmark tasks behind one small interface used by the training loop.

Every task holds its data splits in memory and hands out minibatches by index:
``task.batch(split, idx) -> (x, y)`` with ``x`` of shape (B, L, input_size).
"""

from __future__ import annotations

from typing import Any

import torch


class Task:
    """Base class. Subclasses set the attributes below and implement ``size``, ``batch``
    and ``loss_and_metrics``. Splits are named "train", "val" and "test"."""

    input_size: int
    output_size: int
    readout: str  # "all": the model predicts at every step; "last": only at the final step
    metric: str  # the validation metric used for model selection
    higher_is_better: bool
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
        from hdetach.model import SequenceModel

        return SequenceModel(cfg, self)


def make_task(cfg: Any) -> Task:
    """Build the task named by ``cfg.task`` from a resolved training config."""
    from hdetach.tasks.adding import AddingTask
    from hdetach.tasks.copying import CopyingTask
    from hdetach.tasks.mnist import MNISTTask

    if cfg.task == "copy":
        return CopyingTask(cfg.T, cfg.input_encoding, cfg.n_train, cfg.n_val, cfg.n_test, cfg.seed)
    if cfg.task == "adding":
        return AddingTask(cfg.T, cfg.n_train, cfg.n_val, cfg.n_test, cfg.seed)
    if cfg.task in ("mnist", "pmnist"):
        perm_seed = cfg.perm_seed if cfg.task == "pmnist" else None
        return MNISTTask(cfg.data_dir, perm_seed, cfg.n_train, cfg.n_val, cfg.n_test)
    if cfg.task == "caption":
        from hdetach.captioning.task import CaptionTask

        return CaptionTask.from_config(cfg)
    raise ValueError(
        f"unknown task {cfg.task!r}; expected one of copy, adding, mnist, pmnist, caption"
    )


def data_rng(seed: int, stream: str) -> torch.Generator:
    """A torch generator for one data stream (split), independent of the others and of
    the training RNGs, so that the data are fixed by the seed alone."""
    # Hash the pair through numpy's SeedSequence so (seed, stream) pairs never collide
    # the way seed + offset schemes do (seed 1's val set == seed 2's train set).
    import numpy as np

    key = [seed, *stream.encode()]
    return torch.Generator().manual_seed(int(np.random.SeedSequence(key).generate_state(1)[0]))

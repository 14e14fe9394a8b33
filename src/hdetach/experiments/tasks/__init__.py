"""The tasks, behind one interface, ``Task``, which this module defines torch-free.

A task has two parts. What it is before any data exists is declared at class level and
read without torch: its name, defaults, data shape, memory estimate, chance level, report
label, and how it completes a run's options (``tasks.definitions``: one class per task).
The class that holds its data subclasses that one and implements the instance methods
the training loop calls (``copying``, ``adding``, ``mnist``; captioning's is in
``captioning.task``). ``tasks.registry`` finds either by the task's name, and imports
the second only when it is asked for.

Every task holds its data splits in memory and hands out minibatches by index:
``task.batch(split, idx) -> (x, y)`` with ``x`` of shape (B, L, input_size).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from hdetach.experiments.errors import ConfigError

if TYPE_CHECKING:  # annotations only: this module is read by the command line, torch-free
    import torch


class Task:
    """Base class. A task's definition sets the class attributes and may override the
    class methods; the class holding its data implements ``from_config``, ``size``,
    ``batch`` and ``loss_and_metrics``. Splits are named "train", "val" and "test"."""

    # What the task is (class level: known before any data is built).
    name: ClassVar[str]  # as the options name it (--task, hdetach train TASK)
    label: ClassVar[str]  # as reports name it
    implementation: ClassVar[str]  # "module:Class" of the class holding its data
    defaults: ClassVar[dict[str, Any]] = {}  # the options it sets when they are not given
    takes_T: ClassVar[bool] = False  # whether --T sets its sequence length (else its data do)
    readout: ClassVar[str]  # "all": the model predicts at every step; "last": at the end
    metric: ClassVar[str]  # the validation metric used for model selection
    higher_is_better: ClassVar[bool]
    chance: ClassVar[float | None] = None  # the metric of a uniform guess, where there is one
    sample_with_replacement: ClassVar[bool]  # True: an epoch is a count of random minibatches

    # A built task (instance level): the widths of its model's input and output.
    input_size: int
    output_size: int

    @classmethod
    def resolve(cls, d: dict[str, Any]) -> None:
        """Complete the options ``d`` (Config fields, the task's defaults applied) with
        what the task derives from them; ConfigError for what it cannot take."""
        if d["perm_from_seed"]:
            raise ConfigError(f"--perm-from-seed is an option of pmnist; got task {cls.name}")
        d.setdefault("n_test", d["n_val"])

    @classmethod
    def shape(cls, d: dict[str, Any]) -> tuple[int, int, int] | None:
        """(training sequence length, input width, output width) of resolved options
        ``d``; None where only the data tell (captioning's vocabulary and features)."""
        return None

    @classmethod
    def data_bytes(cls, d: dict[str, Any]) -> int:
        """Bytes of data the task holds in memory for resolved options ``d``, counted
        where it is a large part of a run's memory (``footprint``); else 0."""
        return 0

    @classmethod
    def from_config(cls, cfg: Any) -> Task:
        """The task, its data built, for a resolved run config."""
        raise NotImplementedError

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

    def make_model(self, cfg: Any) -> torch.nn.Module | None:
        """The task's own model (captioning's decoder), or None for the lab's sequence
        model, built from ``input_size``, ``output_size`` and ``readout`` by
        ``model.make_model``. Either has an ``lstm`` whose ``p_detach`` the loop sets at
        each epoch, and takes the ``x`` of ``batch`` to what ``loss_and_metrics`` reads."""
        return None

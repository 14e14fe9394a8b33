"""The paper's sequence tasks (copying, adding, pixel MNIST): one LSTM and a readout."""

from __future__ import annotations

from typing import Any

from torch import nn

from hdetach.experiments.model import SequenceModel
from hdetach.experiments.tasks.base import Task


class SequenceTask(Task):
    """A task whose model is ``SequenceModel``: the LSTM with a linear readout at every
    step or at the last one (``readout``)."""

    def make_model(self, cfg: Any) -> nn.Module:
        return SequenceModel(cfg, self)

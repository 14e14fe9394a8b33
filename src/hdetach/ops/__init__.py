"""Backends of the core op ``lstm_recurrence``: one LSTM layer, one direction, over time."""

from hdetach.ops.fused import FusedLSTM
from hdetach.ops.reference import reference_lstm_recurrence

__all__ = ["FusedLSTM", "reference_lstm_recurrence"]

"""Backends of the core op ``lstm_recurrence``: one LSTM layer, one direction, over time."""

from hdetach.ops.fused.lstm import fused_lstm_layer, fused_lstm_recurrence
from hdetach.ops.reference import reference_lstm_recurrence

__all__ = ["fused_lstm_layer", "fused_lstm_recurrence", "reference_lstm_recurrence"]

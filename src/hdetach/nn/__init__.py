"""Modules: the h-detach LSTM, its cell, populations of LSTMs, and conversion from/to
``torch.nn.LSTM``."""

from hdetach.nn.cell import LSTMCell
from hdetach.nn.convert import convert, revert
from hdetach.nn.lstm import LSTM
from hdetach.nn.population import PopulationLSTM

# Every hdetach class a pickled whole model (torch.save(model)) refers to: trust them with
# torch.load(path, weights_only=True) under
# torch.serialization.safe_globals([*hdetach.SAFE_GLOBALS, <your model's own classes>]).
SAFE_GLOBALS = [LSTM, LSTMCell, PopulationLSTM]

__all__ = ["LSTM", "LSTMCell", "PopulationLSTM", "SAFE_GLOBALS", "convert", "revert"]

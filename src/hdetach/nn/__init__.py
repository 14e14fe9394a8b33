"""Modules: the h-detach LSTM, its cell, populations of LSTMs, and conversion from/to
``torch.nn.LSTM``."""

import torch

from hdetach.nn.cell import LSTMCell
from hdetach.nn.convert import convert, revert
from hdetach.nn.lstm import LSTM
from hdetach.nn.population import PopulationLSTM

# Every hdetach class a pickled whole model (torch.save(model)) refers to. Importing
# hdetach adds them to torch's weights_only allowlist, so a converted model loads with
# torch.load(path, weights_only=True) under the safe_globals its torch.nn classes need.
# That is safe: they are plain nn.Modules, whose pickled state is tensors and option
# values (strings, numbers) that the weights_only unpickler itself restricts; loading
# sets attributes and calls no other code (torch.nn.LSTM's own __setstate__ for LSTM).
SAFE_GLOBALS = [LSTM, LSTMCell, PopulationLSTM]
if hasattr(torch.serialization, "add_safe_globals"):  # torch >= 2.4
    torch.serialization.add_safe_globals(SAFE_GLOBALS)

__all__ = ["LSTM", "LSTMCell", "PopulationLSTM", "SAFE_GLOBALS", "convert", "revert"]

"""Modules: the h-detach LSTM, its cell, and conversion from/to ``torch.nn.LSTM``."""

from hdetach.nn.cell import LSTMCell
from hdetach.nn.convert import convert, revert
from hdetach.nn.lstm import LSTM

__all__ = ["LSTM", "LSTMCell", "convert", "revert"]

"""hdetach: a drop-in torch.nn.LSTM whose training gradient can be modified by h-detach.

This is the library: the op (``functional``, backends in ``ops``), the modules and the
gradient-path analysis. The paper's experiments and the ``hdetach`` command live in
``hdetach.experiments``, which the library never imports.

import hdetach
lstm = hdetach.LSTM(input_size, hidden_size, p_detach=0.25)   # like torch.nn.LSTM
model = hdetach.convert(model, p_detach=0.25)                 # or swap inside a model
population = hdetach.PopulationLSTM(8, input_size, hidden_size, p_detach=[0, 0.25] * 4)
paths = hdetach.gradient_paths(model, lambda: loss_of(model(x), y))  # cell vs h path
model = torch.load(path, weights_only=True)  # a whole saved model: hdetach's classes are trusted
"""

from hdetach import functional
from hdetach.analysis import gradient_paths, gradient_profiles
from hdetach.nn import LSTM, SAFE_GLOBALS, LSTMCell, PopulationLSTM, convert, revert

__version__ = "0.1.0"
__all__ = [
    "LSTM",
    "LSTMCell",
    "PopulationLSTM",
    "SAFE_GLOBALS",
    "convert",
    "revert",
    "functional",
    "gradient_paths",
    "gradient_profiles",
    "__version__",
]

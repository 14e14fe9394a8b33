"""The sequence tasks' fixed sizes, which ``config`` checks a run's options against before
any task is built: sequence lengths, input and output widths, MNIST's splits. They live
apart from the task modules because those build models from a config, and config needs
these first.
"""

from __future__ import annotations

from typing import Any

# Copying (tasks.copying): 10 symbols drawn from 8, in a vocabulary of the blank, the 8
# symbols and the delimiter; the model predicts the blank or a symbol at every step.
COPY_SYMBOLS = 10
COPY_TOKENS = 10
COPY_CLASSES = 9
# Input width by encoding: the paper's raw scalar token, or one-hot over the vocabulary.
COPY_INPUT_WIDTHS = {"scalar": 1, "onehot": COPY_TOKENS}
ENCODINGS = tuple(COPY_INPUT_WIDTHS)

ADDING_WIDTHS = (2, 1)  # inputs: a value and its marker; output: the sum

MNIST_PIXELS = 784  # one per step: the sequence length
MNIST_WIDTHS = (1, 10)  # one pixel in, ten digits out
# The first 50k training images train, the last 10k validate; the 10k test images test.
MNIST_SPLITS = {"n_train": 50_000, "n_val": 10_000, "n_test": 10_000}


def copy_length(T: int) -> int:
    """Steps in a copying sequence with delay ``T``: the symbols, T-1 blanks, the
    delimiter and the steps the symbols are copied back in."""
    return T + 2 * COPY_SYMBOLS


def sequence_shape(d: dict[str, Any]) -> tuple[int, int, int]:
    """(training sequence length, input width, output width) of a resolved sequence-task
    config (a dict of Config fields)."""
    if d["task"] == "copy":
        return copy_length(d["T"]), COPY_INPUT_WIDTHS[d["input_encoding"]], COPY_CLASSES
    if d["task"] == "adding":
        return d["T"], *ADDING_WIDTHS
    if d["task"] in ("mnist", "pmnist"):
        return MNIST_PIXELS, *MNIST_WIDTHS
    raise ValueError(f"{d['task']!r} is not a sequence task")

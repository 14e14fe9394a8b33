"""What each task is before any data is built, torch-free: its name, defaults, data shape,
memory estimate, chance level and report label, and how it completes a run's options.
The command line, the config resolution, the memory estimate and the report read these;
the class that holds a task's data subclasses its definition here (``implementation``).

Defaults follow the protocols of the authors' public code (see README, Experiments).
"""

from __future__ import annotations

import math
from typing import Any

from hdetach.experiments.errors import ConfigError
from hdetach.experiments.tasks import Task
from hdetach.settings import mnist_data_dir

# Copying: 10 symbols drawn from 8, in a vocabulary of the blank, the 8 symbols and the
# delimiter; the model predicts the blank or a symbol at every step.
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

FLOAT_BYTES = 4


def copy_length(T: int) -> int:
    """Steps in a copying sequence with delay ``T``: the symbols, T-1 blanks, the
    delimiter and the steps the symbols are copied back in."""
    return T + 2 * COPY_SYMBOLS


def examples(d: dict[str, Any]) -> int:
    """Examples in all three splits of resolved options ``d``."""
    return d["n_train"] + d["n_val"] + d["n_test"]


class Copying(Task):
    """Copying (Hochreiter & Schmidhuber 1997; the h-detach paper's protocol)."""

    name = "copy"
    label = "copying task"
    implementation = "hdetach.experiments.tasks.copying:CopyingTask"
    defaults = dict(
        T=100, hidden_size=128, epochs=200, steps_per_epoch=1000, n_train=100_000, n_val=5000
    )
    takes_T = True
    readout = "all"
    metric = "acc"
    higher_is_better = True
    chance = 1 / 8  # accuracy on the copied symbols of a uniform guess among the 8
    sample_with_replacement = True

    @classmethod
    def shape(cls, d: dict[str, Any]) -> tuple[int, int, int]:
        return copy_length(d["T"]), COPY_INPUT_WIDTHS[d["input_encoding"]], COPY_CLASSES

    @classmethod
    def data_bytes(cls, d: dict[str, Any]) -> int:
        return examples(d) * COPY_SYMBOLS * 8  # each example's symbols (int64)


class Adding(Task):
    """Adding (Hochreiter & Schmidhuber 1997): the sum of the two marked values."""

    name = "adding"
    label = "adding task"
    implementation = "hdetach.experiments.tasks.adding:AddingTask"
    defaults = dict(
        T=200, hidden_size=128, epochs=50, steps_per_epoch=1000, n_train=100_000, n_val=5000
    )
    takes_T = True
    readout = "last"
    metric = "mse"
    higher_is_better = False
    sample_with_replacement = True

    @classmethod
    def shape(cls, d: dict[str, Any]) -> tuple[int, int, int]:
        return d["T"], *ADDING_WIDTHS

    @classmethod
    def data_bytes(cls, d: dict[str, Any]) -> int:
        return examples(d) * d["T"] * 3 * FLOAT_BYTES  # whole sequences


class PixelMNIST(Task):
    """Sequential (pixel-by-pixel) MNIST. An epoch is one pass over the (first n_train
    of the) 50k training images."""

    name = "mnist"
    label = "pixel MNIST"
    implementation = "hdetach.experiments.tasks.mnist:MNISTTask"
    defaults = dict(
        T=MNIST_PIXELS, hidden_size=100, epochs=200, n_train=MNIST_SPLITS["n_train"],
        n_val=MNIST_SPLITS["n_val"],
    )  # fmt: skip
    readout = "last"
    metric = "acc"
    higher_is_better = True
    chance = 1 / 10  # ten digits
    sample_with_replacement = False

    @classmethod
    def resolve(cls, d: dict[str, Any]) -> None:
        cls.resolve_images(d)
        super().resolve(d)

    @classmethod
    def resolve_images(cls, d: dict[str, Any]) -> None:
        """MNIST's part of ``resolve``: its fixed length and split sizes, its folder."""
        if d["T"] != MNIST_PIXELS:
            raise ConfigError(f"--T is fixed at {MNIST_PIXELS} for {cls.name}; got {d['T']}")
        d.setdefault("n_test", MNIST_SPLITS["n_test"])
        if any(d[k] > n for k, n in MNIST_SPLITS.items()):
            most = ", ".join(f"--{k.replace('_', '-')} {n}" for k, n in MNIST_SPLITS.items())
            raise ConfigError(f"MNIST has at most {most}")
        d["data_dir"] = d.get("data_dir") or str(mnist_data_dir())
        d.setdefault("steps_per_epoch", math.ceil(d["n_train"] / d["batch_size"]))

    @classmethod
    def shape(cls, d: dict[str, Any]) -> tuple[int, int, int]:
        return MNIST_PIXELS, *MNIST_WIDTHS


class PermutedMNIST(PixelMNIST):
    """Permuted MNIST: pixel MNIST read in the order of a fixed permutation (the one of
    --perm-seed, or with --perm-from-seed the authors' draw from --seed)."""

    name = "pmnist"
    label = "permuted MNIST"
    implementation = "hdetach.experiments.tasks.mnist:PermutedMNISTTask"

    @classmethod
    def resolve(cls, d: dict[str, Any]) -> None:
        """MNIST's options, and the permutation's seed: with --perm-from-seed the run's
        own. Its checksum is recorded by ``PermutedMNISTTask``, which draws it."""
        cls.resolve_images(d)
        if d["perm_from_seed"]:
            if d["perm_seed"] not in (0, d["seed"]):
                raise ConfigError(
                    f"--perm-seed {d['perm_seed']} and --perm-from-seed exclude each other: "
                    "the second draws the permutation from --seed"
                )
            d["perm_seed"] = d["seed"]


class Captioning(Task):
    """Image captioning (hdetach caption train, which sets its data sizes)."""

    name = "caption"
    label = "caption"
    implementation = "hdetach.experiments.captioning.task:CaptionTask"
    defaults = dict(hidden_size=512, epochs=30)
    readout = "all"
    metric = "cider"
    higher_is_better = True
    sample_with_replacement = False

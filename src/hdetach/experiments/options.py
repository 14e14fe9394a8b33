"""A run's options, torch-free: the ``Config`` dataclass, each field's type, default,
choices and help (``metadata["help"]``) written here once, and the command-line options
made from them, so that a command's parser is built, and its --help printed, without
importing torch. Their validation and the task defaults are ``config.resolve``'s.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from hdetach.choices import BACKENDS, DETACH_PATHS, DETACH_SCOPES, LAYER_MASKS
from hdetach.experiments.tasks.definitions import ENCODINGS
from hdetach.experiments.tasks.registry import TASKS

OPTIMIZERS = ("adam", "sgd", "rmsprop")
CLIP_MODES = ("norm", "value", "none")


def option(default: Any, help: str) -> Any:
    """A dataclass field with its CLI help: the options of train and caption are made from these."""
    return field(default=default, metadata={"help": help})


@dataclass
class Config:
    """Everything that defines a run. ``None`` means "the task's default" until resolved."""

    task: str = option("copy", "the task")
    T: int | None = option(None, "copy: blank-gap length (sequence T+20); adding: length")
    input_encoding: str = option("scalar", "copy input: the paper's raw scalar token or one-hot")
    perm_seed: int = option(0, "pmnist: seed of the fixed pixel permutation, independent of --seed")
    perm_from_seed: bool = option(
        False,
        "pmnist: a permutation per run, drawn from --seed as the authors' script draws it "
        "(NumPy: np.random.seed(seed); np.random.permutation(784)), instead of the fixed "
        "--perm-seed; the config records it as perm_seed (= seed) and perm_checksum",
    )
    data_dir: str | None = option(None, "MNIST folder (default $HDETACH_DATA/mnist or user cache)")
    # model
    hidden_size: int | None = option(None, "LSTM units")
    num_layers: int = option(1, "LSTM layers")
    p_detach: float = option(0.25, "h-detach probability per step; 0 is the vanilla LSTM")
    anneal_epochs: int = option(0, "switch h-detach off (p = 0) for the last K epochs")
    detach_scope: str = option("batch", "one draw per step for the batch (the paper) or per sample")
    detach_path: str = option("h", "h: h-detach; c: the c-detach ablation")
    layer_masks: str = option("shared", "one detach draw for all layers, or one per layer")
    backend: str = option("auto", "LSTM implementation")
    # optimisation
    optimizer: str = option("adam", "optimizer (sgd: momentum 0.9)")
    lr: float = option(1e-3, "learning rate")
    clip: str = option("norm", "gradient clipping by norm, by value, or none")
    clip_value: float = option(1.0, "the clipping threshold")
    batch_size: int = option(100, "training minibatch size")
    epochs: int | None = option(None, "training epochs")
    steps_per_epoch: int | None = option(
        None, "copy/adding: minibatches per epoch; MNIST: one pass"
    )
    max_steps: int | None = option(None, "train for at most this many steps in total")
    eval_every: int | None = option(None, "steps between validations (default: once per epoch)")
    eval_batch_size: int = option(1000, "evaluation minibatch size")
    track_gradients: int = option(
        0,
        "every N steps, log the gradient split into cell path and h path (norms, "
        "||h-path||/||cell-path||, cosines; W_ih, W_hh, biases) on a fixed validation batch "
        "to metrics.jsonl and TensorBoard; each tracked step costs two extra forward+backward "
        "passes (measured: 2.0x a training step's), so N=100 adds about 2%%; 0: off",
    )
    # data sizes (MNIST: the first n_* images of each split)
    n_train: int | None = option(None, "training examples (copy/adding: fixed sequences)")
    n_val: int | None = option(None, "validation examples (MNIST: the last training images)")
    n_test: int | None = option(None, "test examples (default: copy/adding as many as validation)")
    seed: int = option(0, "seeds every generator")
    device: str = option("auto", "auto (CUDA when present), cpu, cuda[:N]")
    run_dir: str | None = option(
        None, "output directory (default runs/<task>-T<T>-<p>-s<seed>-<time>)"
    )
    task_options: dict | None = None  # a task's own settings (captioning's); not an option
    perm_checksum: str | None = None  # pmnist: the permutation's fingerprint; set by resolve()
    total_steps: int | None = None  # filled in by resolve(); not an option

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# The allowed values of each option with choices: the very tuples the modules check against.
CHOICES: dict[str, tuple] = {
    "task": tuple(TASKS),
    "input_encoding": ENCODINGS,
    "detach_scope": DETACH_SCOPES,
    "detach_path": DETACH_PATHS,
    "layer_masks": LAYER_MASKS,
    "backend": BACKENDS,
    "optimizer": OPTIMIZERS,
    "clip": CLIP_MODES,
}


def flag(name: str) -> str:
    """The command-line flag of a Config field."""
    return "--T" if name == "T" else "--" + name.replace("_", "-")


def option_type(hint: Any) -> type:
    """The argparse type of a field annotation: ``int | None`` -> int."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
    return hint


def default_text(cls: type, f: dataclasses.Field) -> str:
    """How the help states a field's default: its value, or each task's default."""
    if f.default is not None:
        return f"default {f.default:g}" if isinstance(f.default, float) else f"default {f.default}"
    per_task = {t: c.defaults[f.name] for t, c in TASKS.items() if f.name in c.defaults}
    if cls is Config and per_task:
        return "default " + ", ".join(f"{t} {v}" for t, v in per_task.items())
    return ""


def add_dataclass_options(
    parser: argparse.ArgumentParser, cls: type, choices: dict[str, tuple], skip: tuple = ()
) -> None:
    """One option per field of the dataclass ``cls`` that has ``metadata["help"]``; type,
    choices and stated default come from the field itself. Unset options stay absent."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if "help" not in f.metadata or f.name in skip:
            continue
        stated = default_text(cls, f)
        if hints[f.name] is bool:  # a switch, off by default
            parser.add_argument(
                flag(f.name),
                dest=f.name,
                action="store_true",
                default=argparse.SUPPRESS,
                help=f"{f.metadata['help']} ({stated})",
            )
            continue
        parser.add_argument(
            flag(f.name),
            dest=f.name,
            type=option_type(hints[f.name]),
            choices=choices.get(f.name),
            default=argparse.SUPPRESS,
            help=f.metadata["help"] + (f" ({stated})" if stated else ""),
        )

"""The run configuration: its options, their choices and defaults, and their validation.

The ``hdetach train`` options are generated from ``Config``: each field's type, default,
choices and help (``metadata["help"]``) are written here once.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import struct
import time
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hdetach.experiments import footprint
from hdetach.experiments.tasks.permutation import permutation_checksum, pixel_permutation
from hdetach.experiments.tasks.sizes import ENCODINGS, MNIST_PIXELS, MNIST_SPLITS
from hdetach.functional import BACKENDS, DETACH_PATHS
from hdetach.nn.lstm import DETACH_SCOPES, LAYER_MASKS
from hdetach.ops.dispatch import select_backend
from hdetach.settings import checkpoint_minutes, mnist_data_dir

TASKS = ("copy", "adding", "mnist", "pmnist")  # hdetach train's
CAPTION_TASK = "caption"  # trained by hdetach caption train, which sets its data sizes
OPTIMIZERS = ("adam", "sgd", "rmsprop")
CLIP_MODES = ("norm", "value", "none")
# For MNIST an epoch is one pass over the (first n_train of the) 50k training images.
_MNIST_DEFAULTS = dict(
    T=MNIST_PIXELS, hidden_size=100, epochs=200, n_train=MNIST_SPLITS["n_train"],
    n_val=MNIST_SPLITS["n_val"],
)  # fmt: skip

# Task defaults follow the protocols of the authors' public code (see README, Experiments).
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "copy": dict(
        T=100, hidden_size=128, epochs=200, steps_per_epoch=1000, n_train=100_000, n_val=5000
    ),
    "adding": dict(
        T=200, hidden_size=128, epochs=50, steps_per_epoch=1000, n_train=100_000, n_val=5000
    ),
    "mnist": _MNIST_DEFAULTS,
    "pmnist": _MNIST_DEFAULTS,
    CAPTION_TASK: dict(hidden_size=512, epochs=30),
}


class ConfigError(ValueError):
    """A bad option value, detected before any work starts."""


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
    "task": (*TASKS, CAPTION_TASK),
    "input_encoding": ENCODINGS,
    "detach_scope": DETACH_SCOPES,
    "detach_path": DETACH_PATHS,
    "layer_masks": LAYER_MASKS,
    "backend": BACKENDS,
    "optimizer": OPTIMIZERS,
    "clip": CLIP_MODES,
}
# Options that must be finite and > 0 when given.
POSITIVE = (
    "T",
    "hidden_size",
    "num_layers",
    "lr",
    "clip_value",
    "batch_size",
    "epochs",
    "steps_per_epoch",
    "max_steps",
    "eval_every",
    "eval_batch_size",
    "n_train",
    "n_val",
    "n_test",
)


# Where the numbers go: floats into float32 tensors (the run's dtype: the optimizer's step,
# the clipping threshold, the detach draw), ints into int64 ones (sizes, steps); the seeds
# also seed NumPy, whose legacy seeding takes 0 to 2**32 - 1.
FLOAT32_TINY = 2.0**-149  # the smallest positive float32 (subnormal)
FLOAT32_MAX = float.fromhex("0x1.fffffep+127")
INT64_MAX = 2**63 - 1
SEED_MAX = 2**32 - 1
SEEDS = ("seed", "perm_seed")
# What an optimizer divides --lr by in its largest step: Adam's first step is
# lr / (1 - beta1), with torch's beta1 = 0.9 (model.make_optimizer keeps the defaults),
# computed as torch computes it.
LR_STEP_DIVISOR = {"adam": 1 - 0.9, "rmsprop": 1.0, "sgd": 1.0}


def flag(name: str) -> str:
    """The command-line flag of a Config field."""
    return "--T" if name == "T" else "--" + name.replace("_", "-")


def _check_values(cfg: Config) -> None:
    for name, choices in CHOICES.items():
        if getattr(cfg, name) not in choices:
            raise ConfigError(
                f"{flag(name)} must be one of {', '.join(map(str, choices))}; "
                f"got {getattr(cfg, name)!r}"
            )
    if not 0.0 <= cfg.p_detach <= 1.0:
        raise ConfigError(f"--p-detach must be in [0, 1]; got {cfg.p_detach}")
    if cfg.track_gradients < 0:
        raise ConfigError(f"--track-gradients must be >= 0; got {cfg.track_gradients}")
    for name in POSITIVE:
        value = getattr(cfg, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{flag(name)} must be finite and > 0; got {value}")
    if cfg.anneal_epochs < 0:
        raise ConfigError(f"--anneal-epochs must be >= 0; got {cfg.anneal_epochs}")
    _check_representable(cfg)
    if cfg.backend == "native" and cfg.p_detach > 0:
        # torch's own kernel cannot cut the gradient: it is exact only for the plain LSTM.
        raise ConfigError(f"--backend native needs --p-detach 0; got {cfg.p_detach}")
    check_device(cfg.device)
    if cfg.run_dir is not None and Path(cfg.run_dir).exists() and not Path(cfg.run_dir).is_dir():
        raise ConfigError(f"--run-dir {cfg.run_dir} is a file, not a directory")


def as_float32(value: float) -> float:
    """``value`` rounded to float32, as a tensor holds it; inf where it overflows."""
    try:
        return struct.unpack("<f", struct.pack("<f", value))[0]
    except OverflowError:  # beyond FLOAT32_MAX after rounding
        return math.copysign(math.inf, value)


def check_float32(option: str, value: float) -> None:
    """Refuse a finite ``value`` that float32 turns into inf, or into 0 when it is not 0."""
    cast = as_float32(value)
    if math.isfinite(value) and (not math.isfinite(cast) or (cast == 0) != (value == 0)):
        raise ConfigError(
            f"{option} must be representable as float32, the run's dtype (0 or between "
            f"{FLOAT32_TINY:.3g} and {FLOAT32_MAX:.3g} in size); got {value}"
        )


def check_int64(option: str, value: int) -> None:
    """Refuse an int beyond int64, the dtype of the tensors that sizes and steps reach."""
    if abs(value) > INT64_MAX:
        raise ConfigError(f"{option} must fit int64 (at most {INT64_MAX}); got {value}")


def check_threads(threads: int | None) -> None:
    """Refuse a --threads that torch.set_num_threads (a C int) cannot take."""
    if threads is not None and not 1 <= threads <= 2**31 - 1:
        raise ConfigError(f"--threads must be >= 1 and < 2**31; got {threads}")


def _check_representable(cfg: Config) -> None:
    """Every numeric option as the tensors that use it can hold it (see FLOAT32_TINY)."""
    hints = typing.get_type_hints(Config)
    for f in dataclasses.fields(Config):
        value, kind = getattr(cfg, f.name), option_type(hints[f.name])
        if "help" not in f.metadata or value is None or isinstance(value, bool):
            continue
        if f.name in SEEDS:
            if not 0 <= value <= SEED_MAX:
                raise ConfigError(f"{flag(f.name)} must be in [0, 2**32 - 1]; got {value}")
        elif kind is float:
            check_float32(flag(f.name), value)
        elif kind is int:
            check_int64(flag(f.name), value)
    divisor = LR_STEP_DIVISOR[cfg.optimizer]
    if not math.isfinite(as_float32(cfg.lr / divisor)):
        raise ConfigError(
            f"--lr must be at most {FLOAT32_MAX * divisor:.3g} with --optimizer "
            f"{cfg.optimizer} (its largest step, lr / {divisor:.2g}, must fit float32, the "
            f"run's dtype); got {cfg.lr}"
        )


def check_device(device: str) -> None:
    if device == "auto":
        return
    try:
        kind = torch.device(device).type
    except RuntimeError:
        kind = None
    if kind not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda[:N]; got {device!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device} requested but CUDA is not available")


def checkpoint_seconds() -> float:
    """The longest stretch of training without a ``last.pt`` (HDETACH_CHECKPOINT_MINUTES);
    0: checkpoints at evaluations only. A bad value is a ConfigError, before any work."""
    try:
        return 60 * checkpoint_minutes()
    except ValueError as e:
        raise ConfigError(str(e)) from None


def resolve(cfg: Config) -> Config:
    """Validate every option and fill in task defaults; raises ConfigError naming the option."""
    _check_values(cfg)
    checkpoint_seconds()  # the environment's setting, checked with the options
    d = {**TASK_DEFAULTS[cfg.task], **{k: v for k, v in cfg.to_dict().items() if v is not None}}
    if cfg.task in ("mnist", "pmnist"):
        if d["T"] != MNIST_PIXELS:
            raise ConfigError(f"--T is fixed at {MNIST_PIXELS} for {cfg.task}; got {d['T']}")
        d.setdefault("n_test", MNIST_SPLITS["n_test"])
        if any(d[k] > n for k, n in MNIST_SPLITS.items()):
            most = ", ".join(f"--{k.replace('_', '-')} {n}" for k, n in MNIST_SPLITS.items())
            raise ConfigError(f"MNIST has at most {most}")
        d["data_dir"] = d.get("data_dir") or str(mnist_data_dir())
        d.setdefault("steps_per_epoch", math.ceil(d["n_train"] / d["batch_size"]))
        _resolve_permutation(d)
    else:
        d.setdefault("n_test", d["n_val"])
    if d["perm_from_seed"] and d["task"] != "pmnist":
        raise ConfigError(f"--perm-from-seed is an option of pmnist; got task {d['task']}")
    if d["anneal_epochs"] >= d["epochs"]:
        raise ConfigError(
            f"--anneal-epochs must be < --epochs ({d['epochs']}); got {d['anneal_epochs']}"
        )
    d.setdefault("eval_every", d["steps_per_epoch"])
    d["total_steps"] = min(d["epochs"] * d["steps_per_epoch"], cfg.max_steps or math.inf)
    if d["device"] == "auto":
        d["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    if d["backend"] == "triton":
        _check_triton(d)
    if d["task"] != CAPTION_TASK:  # captioning's sizes come from its dataset, read later
        reason = footprint.shortfall(d)
        if reason is not None:
            raise ConfigError(reason)
    if d.get("run_dir") is None:
        p = "vanilla" if d["p_detach"] == 0 else f"p{d['p_detach']:g}"
        stamp = time.strftime("%Y%m%d-%H%M%S")
        d["run_dir"] = str(Path("runs") / f"{d['task']}-T{d['T']}-{p}-s{d['seed']}-{stamp}")
    return Config(**d)


def _resolve_permutation(d: dict[str, Any]) -> None:
    """Record in ``d`` the pixel order the run will see: with --perm-from-seed its seed is
    the run's own, and for pmnist the permutation's checksum (``tasks.permutation``)."""
    if d["perm_from_seed"]:
        if d["perm_seed"] not in (0, d["seed"]):
            raise ConfigError(
                f"--perm-seed {d['perm_seed']} and --perm-from-seed exclude each other: the "
                "second draws the permutation from --seed"
            )
        d["perm_seed"] = d["seed"]
    if d["task"] == "pmnist":
        perm = pixel_permutation(d["perm_seed"], authors_draw=d["perm_from_seed"])
        d["perm_checksum"] = permutation_checksum(perm)


def with_epochs(cfg: Config, epochs: int, step: int) -> Config:
    """A saved run's resolved ``cfg`` trained for ``epochs`` instead: resumed from ``step``,
    it ends exactly as a run started with that length would have, as nothing before the
    end depends on the length, provided the old end was an evaluation (the default: one
    per epoch); otherwise its record keeps that extra evaluation. Refused for a run that
    anneals h-detach over its last epochs (its schedule depends on the length) and for a
    length shorter than what the run has trained."""
    if epochs == cfg.epochs:
        return cfg
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"--epochs must be an int >= 1; got {epochs!r}")
    if cfg.anneal_epochs:
        raise ConfigError(
            f"--epochs: the run switches h-detach off for its last {cfg.anneal_epochs} "
            f"epochs, so its schedule depends on its length ({cfg.epochs} epochs); it "
            "cannot be changed"
        )
    if epochs * cfg.steps_per_epoch < step:
        raise ConfigError(
            f"--epochs {epochs}: the run has already trained {step} steps "
            f"({step / cfg.steps_per_epoch:g} epochs of {cfg.steps_per_epoch})"
        )
    total = min(epochs * cfg.steps_per_epoch, cfg.max_steps or math.inf)
    return dataclasses.replace(cfg, epochs=epochs, total_steps=total)


def _check_triton(d: dict[str, Any]) -> None:
    """Refuse --backend triton where its kernels cannot run the run's LSTM (the reason is
    dispatch.select_backend's, which would otherwise raise at the first step)."""

    try:
        select_backend(
            "triton",
            device=torch.device(d["device"]),
            dtype=torch.float32,
            steps=d.get("T") or 1,
            batch=d["batch_size"],
            hidden_size=d["hidden_size"],
            detached=d["p_detach"] > 0,
        )
    except ValueError as e:
        raise ConfigError(f"--backend triton: {e}") from None


def option_type(hint: Any) -> type:
    """The argparse type of a field annotation: ``int | None`` -> int."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
    return hint


def default_text(cls: type, f: dataclasses.Field) -> str:
    """How the help states a field's default: its value, or each task's default."""
    if f.default is not None:
        return f"default {f.default:g}" if isinstance(f.default, float) else f"default {f.default}"
    per_task = {t: d[f.name] for t, d in TASK_DEFAULTS.items() if f.name in d}
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

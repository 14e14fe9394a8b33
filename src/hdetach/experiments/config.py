"""A run's configuration resolved: every option validated, the task's defaults and
derived values filled in, before any work starts. The options themselves (``Config``,
their choices and help) are declared in ``options``, which the command line reads
without torch.
"""

from __future__ import annotations

import dataclasses
import math
import struct
import time
import typing
from pathlib import Path
from typing import Any

import torch

from hdetach.experiments import footprint
from hdetach.experiments.errors import ConfigError
from hdetach.experiments.options import CHOICES, Config, flag, option_type
from hdetach.experiments.tasks.registry import task_class
from hdetach.ops.dispatch import select_backend
from hdetach.settings import checkpoint_minutes

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
    task = task_class(cfg.task)
    d = {**task.defaults, **{k: v for k, v in cfg.to_dict().items() if v is not None}}
    task.resolve(d)
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
    reason = footprint.shortfall(d)
    if reason is not None:
        raise ConfigError(reason)
    if d.get("run_dir") is None:
        p = "vanilla" if d["p_detach"] == 0 else f"p{d['p_detach']:g}"
        stamp = time.strftime("%Y%m%d-%H%M%S")
        d["run_dir"] = str(Path("runs") / f"{d['task']}-T{d['T']}-{p}-s{d['seed']}-{stamp}")
    return Config(**d)


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

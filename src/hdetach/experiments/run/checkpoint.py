"""Checkpoints: atomic saves and checked loads (the random generators' state: ``hdetach.rng``).

A checkpoint is a plain dict of tensors, numbers and strings (loadable with
``weights_only=True``): config, model, optimizer, sampler, rng, step, best, sums.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hdetach.experiments.config import Config, ConfigError
from hdetach.experiments.model import make_model
from hdetach.experiments.run.files import atomic_write
from hdetach.experiments.tasks import Task
from hdetach.experiments.tasks.registry import make_task

CHECKPOINT_KEYS = ("config", "model", "optimizer", "sampler", "rng", "step", "best", "sums")


class CheckpointError(ConfigError):
    """A checkpoint that cannot be used: missing, damaged, truncated or from another version."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Save atomically: a crash during the save leaves the previous file loadable."""
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by ``save_checkpoint``; raises CheckpointError naming the
    file and what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: damaged or truncated checkpoint ({reason})") from None
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise CheckpointError(
            f"{path}: not an hdetach checkpoint of this version (missing {', '.join(missing)})"
        )
    return ckpt


def config_of(ckpt: dict[str, Any], path: str | Path) -> Config:
    """The run's Config stored in a checkpoint; unknown options mean another version."""
    try:
        return Config(**ckpt["config"])
    except TypeError as e:
        raise CheckpointError(f"{path}: config from another version of hdetach ({e})") from None


@dataclass
class TrainedModel:
    """A trained model as a checkpoint holds it, with the run's config and a task."""

    path: Path  # the checkpoint file
    checkpoint: dict[str, Any]
    config: Config
    task: Task
    model: torch.nn.Module  # the task's model with the checkpoint's weights, on ``device``


def load_trained(
    path: str | Path, device: str = "cpu", make: Callable[[Config], Task] = make_task
) -> TrainedModel:
    """The one way to load a trained run: checkpoint -> config -> task -> model -> weights.

    ``make`` builds the task from the run's config (default: the run's own task, its
    splits as trained; transfer passes a copying task at another T, captioning one with
    every test image), and may refuse a config with ConfigError before any model is
    built. Resuming training goes through ``session.open_run`` instead, which restores
    the optimizer, sampler and random state too.
    """
    path = Path(path)
    ckpt = load_checkpoint(path)
    cfg = config_of(ckpt, path)
    task = make(cfg)
    model = make_model(cfg, task)  # a sequence model, a caption decoder
    model.load_state_dict(ckpt["model"])
    return TrainedModel(path, ckpt, cfg, task, model.to(device))

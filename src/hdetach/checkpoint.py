"""Checkpoints: atomic saves, checked loads, and the state of every random generator.

A checkpoint is a plain dict of tensors, numbers and strings (loadable with
``weights_only=True``): config, model, optimizer, sampler, rng, step, best, sums.
"""

from __future__ import annotations

import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hdetach.config import Config, ConfigError
from hdetach.runfiles import atomic_write

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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds CUDA; the detach masks come from this generator


def rng_state() -> dict[str, Any]:
    """Every global generator's state as plain tensors/ints (loadable with weights_only)."""
    np_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": np_state["state"]["pos"],
            "has_gauss": np_state["has_gauss"],
            "gauss": np_state["gauss"],
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(s: dict[str, Any]) -> None:
    random.setstate(s["python"])
    n = s["numpy"]
    np.random.set_state(
        ("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    torch.set_rng_state(s["torch"])
    if s["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])

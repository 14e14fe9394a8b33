"""``hdetach train`` carried out: one run trained, or resumed, by the training loop."""

from __future__ import annotations

import argparse
import sys

import torch

from hdetach.experiments.config import Config, ConfigError, check_threads, flag
from hdetach.experiments.tasks.registry import TRAIN_TASKS
from hdetach.experiments.train.loop import train


def run(a: argparse.Namespace) -> None:
    """Train the run of ``hdetach train``'s options (``cli``); exits 130 when interrupted,
    1 when the run diverged."""
    opts = {k: v for k, v in vars(a).items() if k not in ("cmd", "run")}
    task, progress, resume, threads = (
        opts.pop(k) for k in ("task", "progress", "resume", "threads")
    )
    check_threads(threads)
    if threads is not None:
        torch.set_num_threads(threads)
    if resume is not None:
        epochs = opts.pop("epochs", None)
        if opts or task:
            flags = ([task] if task else []) + [flag(k) for k in opts]
            raise ConfigError(f"--resume takes the saved config; drop {', '.join(flags)}")
        summary = train(resume=resume, progress=progress, epochs=epochs)
    elif task is None:
        raise ConfigError(f"train needs a TASK ({', '.join(TRAIN_TASKS)}) or --resume RUN_DIR")
    else:
        summary = train(Config(task=task, **opts), progress=progress)
    if summary["status"] != "finished":
        sys.exit(130 if summary["status"] == "interrupted" else 1)

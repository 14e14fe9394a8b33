"""The one registry of tasks that everything asks: the command line's choices and
defaults, the config resolution, the training loop, the report's labels and metric
direction.

``TASKS`` maps each task name to its definition (``tasks.definitions``, torch-free);
``task_class`` gives the class that holds its data, whose module it imports only then,
so that a copying run loads nothing of captioning, and the command line no torch.
"""

from __future__ import annotations

from typing import Any

from hdetach.experiments.lazy import load
from hdetach.experiments.tasks import Task
from hdetach.experiments.tasks.definitions import (
    Adding,
    Captioning,
    Copying,
    PermutedMNIST,
    PixelMNIST,
)

TASKS: dict[str, type[Task]] = {
    cls.name: cls for cls in (Copying, Adding, PixelMNIST, PermutedMNIST, Captioning)
}
# What hdetach train trains; captioning is trained by hdetach caption train, which sets
# its data sizes from the data set.
TRAIN_TASKS = tuple(name for name in TASKS if name != Captioning.name)


def task_class(name: str) -> type[Task]:
    """The class that holds the data of the task ``name`` (its module imported now)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; expected one of {', '.join(TASKS)}")
    return load(TASKS[name].implementation)


def make_task(cfg: Any) -> Task:
    """Build the task named by ``cfg.task`` from a resolved training config."""
    return task_class(cfg.task).from_config(cfg)


def metric_direction(metric: str) -> bool:
    """Whether a larger ``metric`` is better, as the task that records it says."""
    known = {cls.metric: cls.higher_is_better for cls in TASKS.values()}
    if metric not in known:
        raise ValueError(f"metric {metric!r} of unknown direction: give --direction higher|lower")
    return known[metric]

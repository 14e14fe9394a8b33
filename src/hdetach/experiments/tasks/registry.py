"""The one registry of tasks that everything asks: the training loop, the CLI's choices,
the report's metric direction.

``TASKS`` maps each task name to its class; a class says which metric selects models
(``metric``) and whether larger is better (``higher_is_better``).
"""

from __future__ import annotations

from hdetach.experiments.captioning.task import CaptionTask
from hdetach.experiments.config import CAPTION_TASK, Config
from hdetach.experiments.tasks import Task
from hdetach.experiments.tasks.adding import AddingTask
from hdetach.experiments.tasks.copying import CopyingTask
from hdetach.experiments.tasks.mnist import MNISTTask

TASKS: dict[str, type[Task]] = {
    "copy": CopyingTask,
    "adding": AddingTask,
    "mnist": MNISTTask,
    "pmnist": MNISTTask,  # MNIST with the pixel permutation of --perm-seed or --seed
    CAPTION_TASK: CaptionTask,
}


def make_task(cfg: Config) -> Task:
    """Build the task named by ``cfg.task`` from a resolved training config."""
    if cfg.task == "copy":
        return CopyingTask(cfg.T, cfg.input_encoding, cfg.n_train, cfg.n_val, cfg.n_test, cfg.seed)
    if cfg.task == "adding":
        return AddingTask(cfg.T, cfg.n_train, cfg.n_val, cfg.n_test, cfg.seed)
    if cfg.task in ("mnist", "pmnist"):
        perm_seed = cfg.perm_seed if cfg.task == "pmnist" else None
        return MNISTTask(
            cfg.data_dir, perm_seed, cfg.n_train, cfg.n_val, cfg.n_test, cfg.perm_from_seed
        )
    if cfg.task == CAPTION_TASK:
        return CaptionTask.from_config(cfg)
    raise ValueError(f"unknown task {cfg.task!r}; expected one of {', '.join(TASKS)}")


def metric_direction(metric: str) -> bool:
    """Whether a larger ``metric`` is better, as the task that records it says."""
    known = {cls.metric: cls.higher_is_better for cls in TASKS.values()}
    if metric not in known:
        raise ValueError(f"metric {metric!r} of unknown direction: give --direction higher|lower")
    return known[metric]

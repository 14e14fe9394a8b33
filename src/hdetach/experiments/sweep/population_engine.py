"""The population engine: a sweep's runs trained in populations, each in one process
(``hdetach.experiments.train.population``), every member an ordinary run folder.

Runs go together when they share every option but those a population lets differ
(seed, detach probability, optimizer, learning rate, clipping...) and start from the
same step (a fresh run from 0, an interrupted one from its checkpoint's step).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import torch

from hdetach.experiments.config import Config
from hdetach.experiments.run.checkpoint import CheckpointError, load_checkpoint
from hdetach.experiments.run.files import finite_or_none
from hdetach.experiments.run.folder import RunFolder
from hdetach.experiments.sweep.engines import (
    NextTask,
    Outcome,
    SweepTask,
    error_text,
    plan,
    pool_engine,
)
from hdetach.experiments.train.population import shared_settings, train_population

# Trains a population: its members' configs and the threads -> one summary per member.
PopulationFn = Callable[[list[Config], int], list[dict[str, Any]]]


def run_population(cfgs: list[Config], threads: int) -> list[dict[str, Any]]:
    """Train, resume or just read the runs of one population; their summaries. The
    population's lines go to every member's train.log (each line names its member)."""

    torch.set_num_threads(threads)
    folders = [RunFolder(cfg.run_dir) for cfg in cfgs]
    todo = [plan(f.path, cfg.epochs) for cfg, f in zip(cfgs, folders)]
    members = [
        f.path if t == "resume" else cfg for cfg, f, t in zip(cfgs, folders, todo) if t != "done"
    ]
    summaries: list[dict[str, Any]] = []
    if members:
        with contextlib.ExitStack() as stack:
            logs = [stack.enter_context(f.open_log()) for f in folders]
            stack.enter_context(contextlib.redirect_stderr(_Tee(logs)))
            stack.enter_context(contextlib.redirect_stdout(_Tee(logs)))
            summaries = train_population(members, progress=False, epochs=cfgs[0].epochs)
    trained = iter(summaries)
    return [
        f.read_summary() if t == "done" else finite_or_none(next(trained))
        for f, t in zip(folders, todo)
    ]


class _Tee:
    """A text stream writing to several files."""

    def __init__(self, files: list[Any]) -> None:
        self.files = files

    def write(self, text: str) -> int:
        for f in self.files:
            f.write(text)
        return len(text)

    def flush(self) -> None:
        for f in self.files:
            f.flush()


def _attempt_population(fn: PopulationFn, tasks: list[SweepTask]) -> list[Outcome]:
    """Train one population; an exception fails every member with its error text."""
    names = [name for name, _, _ in tasks]
    try:
        summaries = fn([cfg for _, cfg, _ in tasks], tasks[0][2])
    except Exception as e:  # failed runs are reported and retried, never fatal to the sweep
        return [(name, None, error_text(e)) for name in names]
    return [(name, summary, None) for name, summary in zip(names, summaries)]


def population_engine(
    next_task: NextTask,
    jobs: int,
    members: int | None,
    stopping: Callable[[], bool],
    fn: PopulationFn = run_population,
) -> Iterator[Outcome]:
    """Group the tasks into populations of at most ``members`` runs (None: no limit) and
    train ``jobs`` populations at once in spawned processes. After a stop, the running
    populations stop at a step boundary, and the runs not started come back without a
    summary (interrupted)."""
    waiting: list[tuple[str, SweepTask]] = []  # (group_key, task), in the sweep's order

    def next_group() -> list[SweepTask] | None:
        while (task := next_task()) is not None:
            waiting.append((group_key(task[1]), task))
        if stopping() or not waiting:
            return None
        return take_group(waiting, members)

    yield from pool_engine(next_group, jobs, _attempt_population, fn, stopping)
    for _, (name, _, _) in waiting:
        yield name, None, None


def take_group(waiting: list[tuple[str, SweepTask]], members: int | None) -> list[SweepTask]:
    """Remove from ``waiting`` and return the first task and those after it with the same
    key, at most ``members`` in all."""
    key = waiting[0][0]
    taken = [i for i, (k, _) in enumerate(waiting) if k == key][:members]
    group = [waiting[i][1] for i in taken]
    waiting[:] = [w for i, w in enumerate(waiting) if i not in taken]
    return group


def group_key(cfg: Config) -> str:
    """What the members of a population share: the options they may not differ in and
    the step they start from (a run whose checkpoint cannot be read goes alone)."""

    folder = RunFolder(cfg.run_dir)
    step: int | str = 0
    if plan(folder.path, cfg.epochs) == "resume":
        try:
            step = load_checkpoint(folder.last_checkpoint)["step"]
        except CheckpointError:
            step = f"unreadable {folder.path}"
    return json.dumps([shared_settings(cfg), step], sort_keys=True)

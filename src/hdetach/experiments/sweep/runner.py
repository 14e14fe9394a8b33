"""The sweep's driver: plans every run, hands them to an engine, retries failures, and
shows one progress bar over the runs.

A finished or diverged run (summary.json) is a result and is never rerun; an interrupted
one (last.pt) is resumed; one that failed (an exception, a dead process) is retried up to
``retries`` times, then reported.
"""

from __future__ import annotations

import contextlib
import sys
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from hdetach.experiments.config import Config
from hdetach.experiments.run.folder import RunFolder
from hdetach.experiments.run.interrupt import StopRequest
from hdetach.experiments.sweep.engines import (
    Outcome,
    RunFn,
    SweepTask,
    local_engine,
    plan,
    ray_engine,
    run_one,
)
from hdetach.experiments.sweep.population_engine import population_engine


@dataclass
class SweepResult:
    """Summaries of the runs that ended (finished or diverged), by name; the error of each
    run that failed every attempt; the names of runs that were stopped by an interrupt;
    the runs left alone because another process was training them."""

    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    interrupted: list[str] = field(default_factory=list)
    elsewhere: dict[str, str] = field(default_factory=dict)  # name -> pid training it now


def headline(name: str, s: dict[str, Any]) -> str:
    """One line for a run that ended: its best validation metric, or where it diverged."""
    if s["status"] == "diverged":
        return f"{name}: diverged at step {s['steps']} ({s['diverged']['what']})"
    return f"{name}: best val {s['metric']} {s['best_val']:.4f} at step {s['best_step']}"


def run_sweep(
    runs: dict[str, Config],
    engine: str = "local",
    jobs: int = 1,
    threads: int = 1,
    retries: int = 1,
    address: str | None = None,
    progress: bool | None = None,
    fn: RunFn = run_one,
    members: int | None = None,
    ship: bool = False,
) -> SweepResult:
    """Run every run not done yet; read the summaries of those that are. ``engine``:
    "local", "ray" or "population" (``jobs`` populations of at most ``members`` runs);
    ``ship``: Ray workers train in folders of their own, shipped to and from the driver."""

    result, todo = _sort_runs(runs, threads)
    attempts = dict.fromkeys(runs, 0)
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=len(runs), initial=len(result.summaries), disable=not show, desc="runs")
    say = bar.write if show else (lambda msg: print(msg, file=sys.stderr, flush=True))
    if result.summaries:
        say(f"{len(result.summaries)} of {len(runs)} runs already done")
    for name, pid in result.elsewhere.items():
        say(f"{name}: being trained by another process (pid {pid}); left to it")
    running = [0]

    stop_request = StopRequest(
        "no new runs; running ones checkpoint and stop (Ctrl-C again to abort)",
        second_aborts=True,
    )
    with stop_request as stop, bar:

        def next_task() -> SweepTask | None:
            if stop.requested or not todo:
                return None
            task = todo.popleft()
            attempts[task[0]] += 1
            running[0] += 1
            bar.set_postfix(running=running[0], failed=len(result.failed))
            return task

        # closed at once if the loop ends early (a second Ctrl-C, an error): the engine
        # then ends its workers rather than wait for them
        engine_outcomes = _engine(
            engine, next_task, jobs, address, lambda: stop.requested, fn, members, ship
        )
        with contextlib.closing(engine_outcomes) as outcomes:
            for name, summary, error in outcomes:
                running[0] -= 1
                _record(result, name, summary, error, stop.requested, say)
                if error is not None and not stop.requested:
                    if attempts[name] <= retries:
                        say(f"{name}: failed ({error}); retrying")
                        todo.append((name, runs[name], threads))
                    else:
                        result.failed[name] = error
                        say(f"{name}: failed {attempts[name]} times; last: {error}")
                if summary is not None and summary["status"] in ("finished", "diverged"):
                    bar.update(1)
                bar.set_postfix(running=running[0], failed=len(result.failed))
    result.interrupted += [t[0] for t in todo] if stop.requested else []
    return result


def _sort_runs(runs: dict[str, Config], threads: int) -> tuple[SweepResult, deque[SweepTask]]:
    """The summaries of the runs already done and the runs another process is training
    now (left to it), in a result; the runs to do."""
    result = SweepResult()
    todo: deque[SweepTask] = deque()
    for name, cfg in runs.items():
        if plan(Path(cfg.run_dir), cfg.epochs) == "done":
            result.summaries[name] = run_one(cfg, threads)  # reads summary.json
        elif (pid := RunFolder(cfg.run_dir).holder()) is not None:
            result.elsewhere[name] = pid
        else:
            todo.append((name, cfg, threads))
    return result, todo


def _record(
    result: SweepResult,
    name: str,
    summary: dict[str, Any] | None,
    error: str | None,
    stopping: bool,
    say: Callable[[str], None],
) -> None:
    if summary is not None and summary["status"] in ("finished", "diverged"):
        result.summaries[name] = summary
        say(headline(name, summary))
    elif summary is not None or stopping:  # stopped by Ctrl-C (or cancelled by it)
        result.interrupted.append(name)
        say(f"{name}: interrupted; run the sweep again to resume it")


def _engine(
    engine: str,
    next_task: Callable[[], SweepTask | None],
    jobs: int,
    address: str | None,
    stopping: Callable[[], bool],
    fn: RunFn,
    members: int | None,
    ship: bool,
) -> Generator[Outcome, None, None]:
    if engine == "population":  # trains its own way: fn is for the run-by-run engines
        return population_engine(next_task, jobs, members, stopping)
    if engine == "ray":
        return ray_engine(next_task, address, stopping, fn, ship)
    return local_engine(next_task, jobs, fn, stopping)

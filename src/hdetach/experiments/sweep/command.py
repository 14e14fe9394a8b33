"""``hdetach sweep`` carried out: the grid of its options (over a study file's), checked
whole before any work, then trained by the chosen engine."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hdetach.experiments.config import ConfigError, check_threads
from hdetach.experiments.sweep.engines import layout, oversubscription
from hdetach.experiments.sweep.grid import Grid, load_toml, parse_axis, parse_seeds, prepare
from hdetach.experiments.sweep.runner import run_sweep
from hdetach.experiments.tasks.registry import TRAIN_TASKS
from hdetach.experiments.train.population import check_member

_OWN = (
    "spec", "grid", "seeds", "out", "engine", "jobs", "threads", "address", "ray_files",
    "retries", "members",
)  # fmt: skip


def grid_from_args(a: argparse.Namespace) -> tuple[Grid, Path]:
    """The grid and out folder of the command line, over those of a study file."""
    base = {k: v for k, v in vars(a).items() if k not in (*_OWN, "progress", "cmd", "run")}
    file: dict = {}
    tasks = ", ".join(TRAIN_TASKS)
    if a.spec in TRAIN_TASKS:
        task = a.spec
    elif a.spec.endswith(".toml"):
        file = load_toml(Path(a.spec))
        task = file.get("task")
        if task not in TRAIN_TASKS:
            raise ConfigError(f"sweep file {a.spec}: task must be one of {tasks}")
    else:
        raise ConfigError(f"sweep needs a TASK ({tasks}) or a .toml file; got {a.spec}")
    axes = dict(file.get("grid", {}))
    axes.update(parse_axis(g) for g in a.grid)
    seeds = file.get("seeds", 1)
    if a.seeds is not None:
        seeds = parse_seeds(a.seeds)
    elif isinstance(seeds, int):
        seeds = list(range(seeds))
    out = a.out or file.get("out")
    if not out:
        raise ConfigError("sweep needs --out FOLDER (or out = ... in the file)")
    return Grid(task, {**file.get("base", {}), **base}, axes, seeds), Path(out)


def run(a: argparse.Namespace) -> None:
    """Train the sweep of ``hdetach sweep``'s options (``cli``)."""
    grid, out = grid_from_args(a)
    check_threads(a.threads)
    for name in ("jobs", "threads", "members"):
        if getattr(a, name) is not None and getattr(a, name) < 1:
            raise ConfigError(f"--{name} must be >= 1; got {getattr(a, name)}")
    if a.retries < 0:
        raise ConfigError(f"--retries must be >= 0; got {a.retries}")
    if a.members is not None and a.engine != "population":
        raise ConfigError("--members is for --engine population")
    if a.ray_files != "shared" and a.engine != "ray":
        raise ConfigError("--ray-files is for --engine ray")
    if a.engine == "population":
        for cfg in grid.runs(out).values():
            check_member(cfg)
    runs = prepare(out, grid)  # every config checked before any work
    if a.engine == "population":  # by default one population (per kind of run)
        jobs, threads = layout(-(-len(runs) // (a.members or len(runs))), a.jobs, a.threads)
        at_once = f"populations of up to {a.members or len(runs)} runs, {jobs} at once"
    else:
        jobs, threads = layout(len(runs), a.jobs, a.threads)
        at_once = f"{jobs} at once"
    each = f"{threads} thread{'s' if threads != 1 else ''} each"
    print(f"sweep: {len(runs)} runs in {out} ({a.engine}, {at_once}, {each})")
    if a.engine != "ray" and (warning := oversubscription(jobs, threads)):
        print(warning, file=sys.stderr)
    result = run_sweep(
        runs,
        a.engine,
        jobs,
        threads,
        a.retries,
        a.address,
        a.progress,
        members=a.members,
        ship=a.ray_files == "driver",
    )
    elsewhere = f", {len(result.elsewhere)} training elsewhere" if result.elsewhere else ""
    print(
        f"{len(result.summaries)} done, {len(result.failed)} failed, "
        f"{len(result.interrupted)} interrupted{elsewhere} of {len(runs)}; "
        f"statistics: hdetach report {out}"
    )
    for name, error in result.failed.items():
        print(f"failed: {name}: {error}", file=sys.stderr)
    if result.interrupted:
        print("interrupted: run the same command again to continue", file=sys.stderr)
        sys.exit(130)
    if result.failed:
        sys.exit(1)
    if result.elsewhere:  # not done yet: a script that goes on to read them would be early
        print("runs left to other processes: run the same command when they end", file=sys.stderr)
        sys.exit(1)

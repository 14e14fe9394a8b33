"""The ``hdetach sweep`` subcommand: a grid of runs from a TOML file or the command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hdetach.experiments.config import (
    CHOICES,
    TASKS,
    Config,
    ConfigError,
    add_dataclass_options,
    check_threads,
)
from hdetach.experiments.sweep.engines import layout, oversubscription
from hdetach.experiments.sweep.grid import Grid, load_toml, parse_axis, parse_seeds, prepare
from hdetach.experiments.sweep.runner import run_sweep
from hdetach.experiments.train.population import check_member

EXAMPLES = """examples:
  hdetach sweep copy --grid p_detach=0,0.25,0.5 --grid lr=1e-3,3e-3 --seeds 5 --out runs/s1
  hdetach sweep copy --T 50 --epochs 10 --grid clip=norm,none --seeds 0,1,2 --out runs/clip
  hdetach sweep study.toml                   # task, seeds, out, [base] and [grid] from a file
  hdetach sweep study.toml --engine ray --address auto
  hdetach sweep study.toml --engine population --threads 2   # the runs as one batched population
  hdetach report runs/s1 --threshold 0.99    # the statistics of the sweep

A study file:
  task = "copy"
  seeds = 5                 # or [0, 1, 2]
  out = "runs/s1"
  [base]
  T = 100
  epochs = 20
  [grid]
  p_detach = [0.0, 0.25, 0.5]
  lr = [1e-3, 3e-3]

Run the same command again to continue: finished and diverged runs are kept, interrupted
ones resumed, failed ones retried. New values or seeds for the same crossed options
extend the sweep, and a larger --epochs trains every run on to it (finished ones too);
other base options need another --out.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sweep",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train every combination of the --grid values with every seed; each "
        "run is an ordinary run folder under --out named by its grid values and seed.",
    )
    p.add_argument("spec", metavar="TASK|FILE.toml", help=f"a task ({', '.join(TASKS)}) or file")
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="NAME=V1,V2",
        help="an option to cross (repeatable; names as in train, _ or -)",
    )
    p.add_argument(
        "--seeds",
        help="a count N (seeds 0..N-1), a list 0,3,7 or ranges 3-5 (2-2: seed 2) (default 1)",
    )
    p.add_argument("--out", help="the sweep folder (required unless the file has out)")
    p.add_argument(
        "--engine",
        choices=ENGINES,
        default="local",
        help="local processes, Ray, or populations trained as one batched computation "
        "(default local)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        help="local: runs at once (default: the cores); population: populations at once",
    )
    p.add_argument("--threads", type=int, help="threads per run (default: cores / jobs)")
    p.add_argument(
        "--members",
        type=int,
        help="population: at most this many runs per population (default: all that can)",
    )
    p.add_argument("--address", help="ray: the cluster (default: a local Ray)")
    p.add_argument(
        "--ray-files",
        choices=("shared", "driver"),
        default="shared",
        help="ray: run folders on a disk every node shares, or on the driver's alone, "
        "shipped to each worker and back (default shared)",
    )
    p.add_argument("--retries", type=int, default=1, help="retries of a failed run (default 1)")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        help="progress bar (default: on a terminal only)",
    )
    add_dataclass_options(p, Config, CHOICES, skip=("task", "seed", "run_dir"))
    p.set_defaults(run=_command)


ENGINES = ("local", "ray", "population")
_OWN = (
    "spec", "grid", "seeds", "out", "engine", "jobs", "threads", "address", "ray_files",
    "retries", "members",
)  # fmt: skip


def grid_from_args(a: argparse.Namespace) -> tuple[Grid, Path]:
    """The grid and out folder of the command line, over those of a study file."""
    base = {k: v for k, v in vars(a).items() if k not in (*_OWN, "progress", "cmd", "run")}
    file: dict = {}
    if a.spec in TASKS:
        task = a.spec
    elif a.spec.endswith(".toml"):
        file = load_toml(Path(a.spec))
        task = file.get("task")
        if task not in TASKS:
            raise ConfigError(f"sweep file {a.spec}: task must be one of {', '.join(TASKS)}")
    else:
        raise ConfigError(f"sweep needs a TASK ({', '.join(TASKS)}) or a .toml file; got {a.spec}")
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


def _command(a: argparse.Namespace) -> None:
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

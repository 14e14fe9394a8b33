"""The ``hdetach sweep`` subcommand: a grid of runs from a TOML file or the command line;
its options, declared torch-free (``command`` carries them out)."""

from __future__ import annotations

import argparse

from hdetach.experiments.options import CHOICES, Config, add_dataclass_options
from hdetach.experiments.tasks.registry import TRAIN_TASKS

ENGINES = ("local", "ray", "population")

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
    tasks = ", ".join(TRAIN_TASKS)
    p.add_argument("spec", metavar="TASK|FILE.toml", help=f"a task ({tasks}) or file")
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
    p.set_defaults(run="hdetach.experiments.sweep.command:run")

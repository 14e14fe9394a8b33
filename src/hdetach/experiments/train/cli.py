"""``hdetach train``: the command line of the training loop (``loop.py``); its options,
declared torch-free (``command`` carries them out)."""

from __future__ import annotations

import argparse

from hdetach.experiments.options import CHOICES, Config, add_dataclass_options
from hdetach.experiments.tasks.registry import TRAIN_TASKS

TRAIN_EXAMPLES = """examples:
  hdetach train copy --T 100 --p-detach 0.5                 # the paper's copying task
  hdetach train copy --T 100 --p-detach 0 --seed 1          # the vanilla LSTM baseline
  hdetach train mnist --data-dir ~/mnist --anneal-epochs 40 # pixel MNIST, h-detach off at the end
  hdetach train pmnist --perm-seed 0                        # permuted MNIST, fixed permutation
  hdetach train adding --T 200 --epochs 20
  hdetach train --resume runs/copy-T100-p0.5-s0-20260101-120000
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """The ``hdetach train`` subcommand: one option per Config field."""
    p = subparsers.add_parser(
        "train",
        epilog=TRAIN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train an LSTM on a task.",
    )
    p.add_argument("task", nargs="?", choices=TRAIN_TASKS, help="the task")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue an interrupted run from its last checkpoint (no other options but "
        "--epochs, which trains it, even a finished one, to that length instead)",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        help="progress bar (default: on a terminal only)",
    )
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's choice)")
    add_dataclass_options(p, Config, CHOICES, skip=("task",))
    p.set_defaults(run="hdetach.experiments.train.command:run")

"""``hdetach analyze``: the weight-scale study, or the gradient paths of trained runs; its
options, declared torch-free (``command`` carries them out)."""

from __future__ import annotations

import argparse
from dataclasses import fields

from hdetach.experiments.gradients.options import SCALES, StudySettings
from hdetach.experiments.tasks.definitions import ENCODINGS
from hdetach.experiments.tasks.registry import TRAIN_TASKS

EXAMPLES = """examples:
  hdetach analyze                                   # the weight-scale study at its defaults
  hdetach analyze --seeds 3 --T 50 --out runs/scales
  hdetach analyze runs/copy-T50-p0.5-s0-X runs/copy-T50-vanilla-s0-X   # trained runs
"""
DESCRIPTION = """\
Split the LSTM gradient into its cell-state path and its h path: the gradient with
every step h-detached (cell path only) against the full one, from the same forward.

Without RUN_DIR, the weight-scale study: at initialization, W_hh multiplied by each of
--scales, over --seeds seeds, measure ||h-path||/||cell-path|| of the training loss's
gradient and how much of the end loss's input gradient reaches the first --first steps
by each path. Writes study.json, ratio.png, first_steps.png and profiles.png to --out.
About 40 seconds at the defaults on an idle 2-core CPU (measured: 39 s).

With RUN_DIRs: the same numbers for each run's best checkpoint on a validation batch,
written to RUN_DIR/analysis (or --out/<run name>).
"""


_DEFAULTS = {f.name: f.default for f in fields(StudySettings)}


def _default(name: str) -> str:
    return f"(default {_DEFAULTS[name]})"


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``analyze`` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser(
        "analyze",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=DESCRIPTION,
        epilog=EXAMPLES,
    )
    p.add_argument("run_dirs", nargs="*", metavar="RUN_DIR", help="trained run directories")
    p.add_argument("--out", help="output folder (study: runs/analysis; runs: RUN_DIR/analysis)")
    study_options = {
        "task": dict(choices=TRAIN_TASKS, help="study: the task"),
        "T": dict(type=int, help="study: copy gap or adding length"),
        "input_encoding": dict(choices=ENCODINGS, help="study: copy input"),
        "hidden_size": dict(type=int, help="study: LSTM units"),
        "seeds": dict(type=int, help="study: seeds 0..N-1"),
        "batch_size": dict(type=int, help="sequences measured (runs: validation ones)"),
        "first": dict(type=int, help="K: the early steps whose share is measured"),
        "end_steps": dict(type=int, help="copy: the end loss is that of the last N outputs"),
        "dtype": dict(choices=("float64", "float32"), help="precision of the measurement"),
    }
    for name, options in study_options.items():
        flag = "--T" if name == "T" else "--" + name.replace("_", "-")
        options["help"] += f" {_default(name)}"
        p.add_argument(flag, dest=name, default=_DEFAULTS[name], **options)
    p.add_argument(
        "--scales",
        type=float,
        nargs="+",
        default=list(SCALES),
        help=f"study: factors of W_hh (default {' '.join(f'{s:g}' for s in SCALES)})",
    )
    # One thread: the measurement is a chain of small per-step operations; on the shared
    # 2-core VM two threads ran 15x slower than one (side by side, other jobs running).
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bar"
    )
    p.set_defaults(run="hdetach.experiments.gradients.command:run")
    return p

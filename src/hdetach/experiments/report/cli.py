"""``hdetach report``: its options, declared torch-free (``command`` checks them before
any work and calls ``report``)."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """The ``hdetach report`` subcommand."""
    p = subparsers.add_parser(
        "report",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Group runs into configurations (runs differing only by seed), plot the "
        "validation metric against epochs (mean, min-max band), transfer accuracy "
        "against T, and write a Markdown table of best/final metrics.",
        epilog="examples:\n  hdetach report runs/\n  hdetach report runs/a runs/b --out report/\n",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run dirs or folders of them")
    p.add_argument("--out", help="output folder (default: the first RUN_DIR)")
    p.add_argument(
        "--threshold",
        type=float,
        help="success: a seed's best val metric reaches this (e.g. 0.99 on copy)",
    )
    p.add_argument(
        "--direction",
        choices=("higher", "lower"),
        help="which way the metric is better (default: the task's)",
    )
    p.add_argument(
        "--baseline",
        metavar="OPTION=VALUE",
        help="compare each configuration with the one equal in all else but OPTION, which "
        "has VALUE (default p_detach=0; e.g. detach_path=h, clip=norm)",
    )
    p.add_argument(
        "--reference",
        action="append",
        metavar="LABEL=VALUE",
        help="a dotted line on the curves at VALUE, named LABEL (repeatable; e.g. "
        "'paper, h-detach=0.985')",
    )
    p.add_argument(
        "--at-epochs",
        metavar="E1,E2",
        help="add a table of the validation metric at these epochs (e.g. 1,5,10,20)",
    )
    p.add_argument(
        "--reach",
        metavar="X1,X2",
        help="add a table of the seeds reaching each value and the epochs they took "
        "(e.g. 0.9,0.95)",
    )
    p.add_argument(
        "--stability",
        action="store_true",
        help="add a section counting per configuration the runs that diverged, spiked "
        "(--spike) or dipped (--dip), compared with the baseline's, and a figure of every "
        "run (runs.png)",
    )
    p.add_argument(
        "--spike",
        type=float,
        default=0.5,
        help="a loss spike: an evaluation interval's mean training loss more than this "
        "above the lowest before it (default 0.5)",
    )
    p.add_argument(
        "--dip",
        type=float,
        default=0.05,
        help="a dip: the validation metric more than this below its best so far, in its "
        "own units (default 0.05)",
    )
    p.add_argument(
        "--until-epoch",
        type=float,
        metavar="E",
        help="read every run as it stood at epoch E (its evaluations up to E), so that "
        "studies of different lengths compare at a common length; a run that went on past "
        "E keeps its test metric only where its best model came by E",
    )
    p.set_defaults(run="hdetach.experiments.report.command:run")

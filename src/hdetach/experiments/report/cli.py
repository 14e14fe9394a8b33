"""``hdetach report``: its options, checked before any work, and the call to ``report``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math

from hdetach.experiments.config import Config, ConfigError
from hdetach.experiments.report.report import report
from hdetach.experiments.report.runs import NOT_CONFIG, Baseline


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
    p.set_defaults(run=_command)


def parse_references(texts: list[str] | None) -> dict[str, float]:
    """``--reference LABEL=VALUE`` options as {label: value}."""
    references = {}
    for text in texts or []:
        label, sep, value = text.rpartition("=")
        try:
            references[label.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not label.strip():
            raise ConfigError(f"--reference takes LABEL=VALUE with VALUE a number; got {text!r}")
    return references


def parse_numbers(text: str | None, option: str, positive: bool = True) -> list[float] | None:
    """``--at-epochs 1,5,10`` or ``--reach 0.9,0.95``: finite numbers (positive ones where
    ``positive``), in order."""
    if text is None:
        return None
    try:
        values = [float(e) for e in text.split(",")]
    except ValueError:
        values = []
    if not values or any(not math.isfinite(v) or (positive and v <= 0) for v in values):
        kind = "positive numbers" if positive else "numbers"
        raise ConfigError(f"{option} takes {kind} separated by commas; got {text!r}")
    return sorted(values)


def _command(a: argparse.Namespace) -> None:

    baseline = None if a.baseline is None else parse_baseline(a.baseline)
    references = parse_references(a.reference)
    epochs = parse_numbers(a.at_epochs, "--at-epochs")
    reach = parse_numbers(a.reach, "--reach", positive=False)
    if not (math.isfinite(a.spike) and a.spike > 0):
        raise ConfigError(f"--spike must be finite and > 0; got {a.spike}")
    if not (math.isfinite(a.dip) and a.dip > 0):
        raise ConfigError(f"--dip must be finite and > 0; got {a.dip}")
    if a.until_epoch is not None and not (math.isfinite(a.until_epoch) and a.until_epoch > 0):
        raise ConfigError(f"--until-epoch must be finite and > 0; got {a.until_epoch}")
    try:
        written = report(
            a.run_dirs,
            a.out or a.run_dirs[0],
            a.threshold,
            a.direction,
            baseline,
            references,
            epochs,
            reach,
            (a.spike, a.dip) if a.stability else None,
            a.until_epoch,
        )
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(str(e)) from None
    print(written["table"].read_text())
    for kind, path in written.items():
        print(f"wrote {kind}: {path}")


def parse_baseline(text: str) -> Baseline:
    """``--baseline OPTION=VALUE``: a run option (as ``train`` names it, _ or -) and a value,
    read as JSON where it is a number (``0``, ``1e-3``), else as text (``h``, ``none``)."""

    key, sep, raw = text.partition("=")
    key = key.strip().lstrip("-").replace("-", "_")
    options = {f.name for f in dataclasses.fields(Config)} - NOT_CONFIG
    if not sep or not raw or key not in options:
        raise ConfigError(
            f"--baseline takes OPTION=VALUE with OPTION a run option (e.g. p_detach=0, "
            f"detach_path=h); got {text!r}"
        )
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key, value

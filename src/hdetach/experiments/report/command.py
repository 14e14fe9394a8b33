"""``hdetach report`` carried out: its options checked before any work, and the call to
``report``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math

from hdetach.experiments.errors import ConfigError
from hdetach.experiments.options import Config
from hdetach.experiments.report.report import report
from hdetach.experiments.report.runs import NOT_CONFIG, Baseline


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


def run(a: argparse.Namespace) -> None:
    """Check the options, write the report, print its table."""
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

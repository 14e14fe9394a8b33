"""The ``hdetach`` command: wires the subcommands, each defined by its own module's
``add_parser(subparsers)`` (which sets ``run``, the function the subcommand calls);
only the chosen subcommand's module is imported."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys

from hdetach.experiments.config import ConfigError
from hdetach.experiments.data.download import DataError

# Each subcommand: the module whose add_parser(subparsers) defines it, and its line in
# `hdetach --help`. A module is imported only once its subcommand is chosen, so that
# `hdetach --help` and a mistyped subcommand answer without loading the lab, and each
# subcommand loads only what it uses (train does not load scipy, report not tensorboard).
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "hdetach.experiments.demo.cli",
        "vanilla vs h-detach LSTM on the copying task, over several seeds",
    ),
    "train": ("hdetach.experiments.train.cli", "train one run"),
    "sweep": (
        "hdetach.experiments.sweep.cli",
        "a grid of runs (options x seeds), resumable, local or on Ray",
    ),
    "transfer": ("hdetach.experiments.transfer.cli", "evaluate a copy checkpoint at longer T"),
    "report": ("hdetach.experiments.report.cli", "plots and a Markdown table from run dirs"),
    "analyze": (
        "hdetach.experiments.gradients.cli",
        "the gradient split into cell path and h path (weight-scale study, trained runs)",
    ),
    "caption": (
        "hdetach.experiments.captioning.cli",
        "image captioning (MS COCO, Karpathy split) with h-detach",
    ),
    "data": ("hdetach.experiments.data.cli", "fetch and verify data sets"),
    "bench": (
        "hdetach.experiments.bench.cli",
        "speed table of the LSTM backends (see hdetach bench --help)",
    ),
}


class _Parser(argparse.ArgumentParser):
    """Bad options exit with code 2 and one line (argparse's usage dump is left to --help);
    options are never abbreviated (``--p`` is not taken for ``--p-detach``)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """The ``hdetach`` parser: every subcommand listed, the ``chosen`` one defined in full
    by its module (imported here), the others by name and help line only."""
    parser = _Parser(
        prog="hdetach",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="h-detach LSTM experiments (Arpit et al., ICLR 2019).",
    )
    subparsers = parser.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    for name, (module, line) in SUBCOMMANDS.items():
        if name == chosen:
            importlib.import_module(module).add_parser(subparsers)
        else:
            subparsers.add_parser(name, help=line, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    chosen = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    if chosen == "bench":  # bench owns its options
        importlib.import_module(SUBCOMMANDS["bench"][0]).main(argv[1:])
        return
    a = build_parser(chosen).parse_args(argv)
    # A scheduler's SIGTERM means what Ctrl-C does: where a command can stop at a safe
    # point (training, sweeps) it does (StopRequest), elsewhere it ends at once, as below.
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        a.run(a)
    except (ConfigError, DataError) as e:
        print(f"hdetach {a.cmd}: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # a second signal, or one where nothing can be saved
        print(f"\nhdetach {a.cmd}: aborted", file=sys.stderr)
        sys.exit(130)
    finally:
        if previous is not None:  # None: a handler not set from Python
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    main()

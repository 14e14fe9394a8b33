"""The ``hdetach`` command: wires the subcommands, each defined by its own module's
``add_parser(subparsers)``, which sets ``run``: where the function that carries the
subcommand out lives ("module:function", ``lazy.load``).

A command answers at once where it can: its parsers are built without torch (each
subcommand's options come from torch-free modules: ``options``, ``hdetach.choices``, the
task definitions), so that --help, --version, a bad option or a mistyped subcommand
never wait for it; the chosen subcommand's function, and with it torch and the rest of
the lab, is imported only once its options parse. ``import hdetach`` leaves the library's
modules to first use in this process alone (see ``hdetach/__init__.py``).
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import signal
import sys
from collections.abc import Iterable

import hdetach
from hdetach.experiments.errors import ConfigError, DataError
from hdetach.experiments.lazy import load

# Each subcommand: the module whose add_parser(subparsers) defines it, and its line in
# `hdetach --help`. A module is imported only once its subcommand is chosen, so that each
# subcommand's parser loads only its own options (train's help does not build caption's).
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
        "speed tables of the LSTM backends and LSTMCell loops (see hdetach bench --help)",
    ),
}


def unknown_command(name: str, commands: Iterable[str]) -> str:
    """The one-line refusal of a mistyped subcommand, naming the closest one."""
    close = difflib.get_close_matches(name, list(commands), n=1)
    hint = f"did you mean {close[0]!r}?" if close else "commands: " + ", ".join(commands)
    return f"unknown command {name!r} ({hint})"


class _Parser(argparse.ArgumentParser):
    """Bad options exit with code 2 and one line (argparse's usage dump is left to --help);
    options are never abbreviated (``--p`` is not taken for ``--p-detach``)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")

    def _check_value(self, action: argparse.Action, value) -> None:
        # A mistyped subcommand is named as such, with the closest one, instead of as
        # argparse's "argument cmd: invalid choice", which names an internal destination.
        if isinstance(action, argparse._SubParsersAction) and value not in action.choices:
            raise argparse.ArgumentError(None, unknown_command(value, action.choices))
        super()._check_value(action, value)


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """The ``hdetach`` parser: every subcommand listed, the ``chosen`` one defined in full
    by its module (imported here), the others by name and help line only."""
    parser = _Parser(
        prog="hdetach",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="h-detach LSTM experiments (Arpit et al., ICLR 2019).",
    )
    parser.add_argument("--version", action="version", version=f"hdetach {hdetach.__version__}")
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
        load(a.run)(a)
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

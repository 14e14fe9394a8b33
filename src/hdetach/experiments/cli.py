"""The ``hdetach`` command: wires the subcommands, each defined by its own module's
``add_parser(subparsers)`` (which sets ``run``, the function the subcommand calls)."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from hdetach.experiments import demo, report, sweep, train, transfer
from hdetach.experiments.bench import main as bench_main
from hdetach.experiments.captioning import cli as caption
from hdetach.experiments.config import ConfigError
from hdetach.experiments.gradients import cli as analyze
from hdetach.experiments.tasks.mnist import DataError, load_mnist
from hdetach.settings import mnist_data_dir


class _Parser(argparse.ArgumentParser):
    """Bad options exit with code 2 and one line (argparse's usage dump is left to --help);
    options are never abbreviated (``--p`` is not taken for ``--p-detach``)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _add_data(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "data",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="fetch and verify data sets",
        description="Download (when missing) and verify MNIST by the MD5 of the "
        "decompressed IDX files.",
        epilog="examples:\n  hdetach data mnist\n"
        "  HDETACH_DATA=/data hdetach data mnist\n"
        "  hdetach data mnist --data-dir ../shared/data/mnist\n",
    )
    p.add_argument("dataset", choices=["mnist"])
    p.add_argument("--data-dir", help="default $HDETACH_DATA/mnist or the user cache dir")
    p.set_defaults(run=_data)


def _data(a: argparse.Namespace) -> None:

    d = Path(a.data_dir) if a.data_dir else mnist_data_dir()
    arrays = load_mnist(d)
    sizes = ", ".join(f"{k} {v.shape}" for k, v in arrays.items())
    print(f"MNIST verified in {d}: {sizes}")


def _add_bench(subparsers: argparse._SubParsersAction) -> None:
    # Listed for --help only: main() hands bench its own arguments.
    subparsers.add_parser(
        "bench", help="speed table of the LSTM backends (see hdetach bench --help)", add_help=False
    )


SUBCOMMANDS = (
    demo.add_parser,
    train.add_parser,
    sweep.add_parser,
    transfer.add_parser,
    report.add_parser,
    analyze.add_parser,
    caption.add_parser,
    _add_data,
    _add_bench,
)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # bench owns its options
        bench_main(argv[1:])
        return
    parser = _Parser(
        prog="hdetach",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="h-detach LSTM experiments (Arpit et al., ICLR 2019).",
    )
    subparsers = parser.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    for add_parser in SUBCOMMANDS:
        add_parser(subparsers)
    a = parser.parse_args(argv)
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

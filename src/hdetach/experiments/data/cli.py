"""``hdetach data``: download (when missing) and verify a data set."""

from __future__ import annotations

import argparse
from pathlib import Path

from hdetach.experiments.tasks.mnist import load_mnist
from hdetach.settings import mnist_data_dir


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "data",
        formatter_class=argparse.RawDescriptionHelpFormatter,
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

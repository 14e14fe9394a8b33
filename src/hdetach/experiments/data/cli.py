"""``hdetach data``: download (when missing) and verify a data set; its options, declared
torch-free (``command`` carries them out)."""

from __future__ import annotations

import argparse


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
    p.set_defaults(run="hdetach.experiments.data.command:run")

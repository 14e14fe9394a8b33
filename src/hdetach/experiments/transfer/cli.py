"""``hdetach transfer``: the command line of transfer copying (``evaluate.transfer``); its
options, declared torch-free (``command`` carries them out)."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """The ``hdetach transfer`` subcommand."""
    p = subparsers.add_parser(
        "transfer",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Transfer copying: accuracy of a trained copy model at other gap lengths T "
        "(fresh sequences). Writes transfer.json beside the checkpoint.",
        epilog="examples:\n  hdetach transfer runs/copy-T100-p0.5-s0-X --T 100 200 400 1000\n"
        "  hdetach transfer runs/copy-T100-p0.5-s0-X/best.pt --T 500 --n 1000\n",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a .pt file or a run dir (best.pt)")
    p.add_argument("--T", nargs="+", type=int, required=True, dest="Ts", help="gap lengths")
    p.add_argument("--n", type=int, default=5000, help="sequences per T (default 5000)")
    p.add_argument("--seed", type=int, default=1234, help="seed of the test sequences")
    p.add_argument("--batch-size", type=int, default=500, help="default 500")
    p.add_argument("--device", default="cpu", help="default cpu")
    p.set_defaults(run="hdetach.experiments.transfer.command:run")

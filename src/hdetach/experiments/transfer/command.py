"""``hdetach transfer`` carried out: a copy model's accuracy at other gaps, as a table."""

from __future__ import annotations

import argparse

from hdetach.experiments.transfer.evaluate import transfer


def run(a: argparse.Namespace) -> None:
    """Evaluate the checkpoint at each T and print the table."""
    r = transfer(a.checkpoint, a.Ts, a.n, a.seed, a.batch_size, a.device)
    print(
        f"transfer of {r['checkpoint']} (trained at T={r['train_T']}, "
        f"p_detach={r['p_detach']:g}), {r['n']} sequences per T"
    )
    print("| T | accuracy |\n|---|---|")
    for T, acc in zip(r["T"], r["acc"], strict=True):
        print(f"| {T} | {acc:.4f} |")

"""``hdetach demo``: vanilla vs h-detach LSTM on the copying task over several seeds; the
demo's setting and its options, declared torch-free (``command`` runs the study).

A small study run through the sweep engine (rerunnable: finished runs are kept,
interrupted ones resumed): both models are trained at a short gap T, then each run's best
model is evaluated at longer gaps (transfer copying), and the two models are compared with
the statistics of ``hdetach report``; the verdicts it prints claim only what the numbers
support.
"""

from __future__ import annotations

import argparse

# The demo's setting: 14 runs of 3000 steps, about 4 minutes on a 2-core CPU. At their own
# T=10 the two models are mostly within noise of each other after 3000 steps; their best
# models' transfer to longer gaps is where they differ, so the headline compares each
# seed's transfer accuracy averaged over the longer gaps. Rerun on disjoint seed sets
# (results/demo-design, docs/demo.md) it said "h-detach better" in 6 of 12 reruns and
# "within noise" in the rest, h-detach ahead in all 12: the effect sits near what 7
# against 7 seeds can show.
DEMO = dict(
    task="copy",
    T=10,
    input_encoding="onehot",
    hidden_size=64,
    lr=1e-2,
    epochs=12,
    steps_per_epoch=250,
    n_val=1000,
    # The gradient's split into cell path and h path, once an epoch: what h-detach acts on,
    # compared below beside the accuracies (cost: about 1% of the training time).
    track_gradients=250,
)
DEMO_P = 0.5  # the h-detach model's probability
DEMO_SEEDS = 7  # per model: with 5 vs 5 one seed left at chance already costs the verdict
TRANSFER_FACTORS = (2, 5, 10)  # transfer copying at 2T, 5T and 10T of the training gap
TRANSFER_N = 5000  # fresh test sequences per transfer T
TRANSFER_SEED = 1234  # their stream, the same for every run (``hdetach transfer``'s default)
# --short: the same study in seconds, for tests and a first look at the output.
SHORT = dict(
    task="copy",
    T=5,
    input_encoding="onehot",
    hidden_size=16,
    lr=1e-2,
    epochs=3,
    steps_per_epoch=40,
    n_train=500,
    n_val=200,
    batch_size=20,
    track_gradients=20,
)
SHORT_TRANSFER_N = 200


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """The ``hdetach demo`` subcommand."""
    p = subparsers.add_parser(
        "demo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The project's point as a small study: a vanilla and an h-detach LSTM "
        f"trained on the copying task at T={DEMO['T']}, {DEMO_SEEDS} seeds each, run as a "
        "sweep (all cores); each run's best model then copies at "
        f"{', '.join(f'{k}T' for k in TRANSFER_FACTORS)} (transfer copying), and the models "
        "are compared (difference of means with a bootstrap CI, Mann-Whitney U). A few "
        "minutes on a 2-core CPU. Run it again to reprint the result or to continue after "
        "Ctrl-C.",
        epilog="examples:\n  hdetach demo\n  hdetach demo --short\n"
        "  hdetach demo --seeds 10 --epochs 40 --out runs/demo10\n"
        "  hdetach demo --hidden-size 128 --lr 3e-3 --epochs 20 --first-seed 5 --out runs/d5\n",
    )
    p.add_argument("--T", type=int, help=f"copy gap in training (default {DEMO['T']})")
    p.add_argument("--p-detach", type=float, default=DEMO_P, help=f"default {DEMO_P}")
    p.add_argument(
        "--epochs",
        type=int,
        help=f"epochs of {DEMO['steps_per_epoch']} minibatches (default {DEMO['epochs']})",
    )
    p.add_argument("--seeds", type=int, help=f"seeds per model (default {DEMO_SEEDS})")
    p.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="the seeds are FIRST_SEED onwards (default 0): disjoint seed sets, same setting",
    )
    p.add_argument("--hidden-size", type=int, help=f"LSTM units (default {DEMO['hidden_size']})")
    p.add_argument("--lr", type=float, help=f"learning rate (default {DEMO['lr']:g})")
    p.add_argument(
        "--steps-per-epoch",
        type=int,
        help=f"minibatches per epoch (default {DEMO['steps_per_epoch']})",
    )
    p.add_argument("--jobs", type=int, help="runs at once (default: the cores)")
    p.add_argument("--short", action="store_true", help="a tiny version in seconds (2 seeds)")
    p.add_argument("--out", help="output folder (default runs/demo, with --short runs/demo-short)")
    p.set_defaults(run="hdetach.experiments.demo.command:run")

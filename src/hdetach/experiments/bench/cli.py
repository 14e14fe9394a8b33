"""Speed table: forward and forward+backward of one minibatch, measured side by side.

    hdetach bench                       # every shape, CPU
    hdetach bench --shapes pmnist --repeats 3 --output benchmarks/cpu.md
    hdetach bench --population 1 2 4 8 16 --shapes copy100 pmnist
    hdetach bench --shapes --cells cell --p 0 0.25 --threads 1 --clock cpu   # cell loops only

Rows per shape: ``torch.nn.LSTM``; a plain loop built like the authors' code
(``nn.LSTMCell``, a host-side Bernoulli draw per step, ``h.detach()``); each of our
backends at several p (on a CPU, ``fused`` once per CPU kernel of ``--cpu-kernels``); the
matrix-product floor (only the products any implementation must do at p = 0, run on the
fused backend's product kernels); and the FLOP floor at each p (see ``FlopFloor``), which
the last column divides into every row's time. Ratios are against rows timed in the same
run.

A second, smaller table (``--cells``, by default the ``cell`` shape) times step-by-step
loops over a cell, forward+backward of the loop's stacked outputs: ``hdetach.LSTMCell``
at each p against the same loop over ``torch.nn.LSTMCell`` with the same weights, the
two timed next to each other at each p (torch's loop detaches nothing, so its rows at
different p differ only by the run's noise), the ratio against torch's loop of that p.

This module holds the options, torch-free, so that --help and a bad option answer at
once; ``table`` measures.
"""

from __future__ import annotations

import argparse

from hdetach.choices import BACKENDS
from hdetach.experiments.bench.clocks import CLOCKS
from hdetach.experiments.lazy import load

# name -> (steps, batch, input, hidden)
SHAPES = {
    "copy100": (120, 100, 1, 128),
    "copy300": (320, 100, 1, 128),
    "pmnist": (784, 100, 1, 100),
    "wide": (100, 64, 512, 512),
    "study": (30, 100, 9, 128),  # the hidden-128 studies of results/studies
    "small": (40, 32, 64, 64),
    "cell": (200, 32, 32, 64),  # the LSTMCell loops' shape (issue 36)
}
# --shapes by default: every shape but the cell loops' (timed by --cells).
DEFAULT_SHAPES = [name for name in SHAPES if name != "cell"]
DEFAULT_CELLS = ["cell"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hdetach bench",
        description="Forward and forward+backward time of hdetach.LSTM vs torch.nn.LSTM and "
        "a plain per-step loop, and of a loop over hdetach.LSTMCell vs the same loop over "
        "torch.nn.LSTMCell, measured side by side.",
        epilog="example: hdetach bench --shapes pmnist copy300 --repeats 3",
    )
    shapes = ", ".join(f"{name} {shape}" for name, shape in SHAPES.items())
    parser.add_argument(
        "--shapes",
        nargs="*",
        choices=list(SHAPES),
        default=DEFAULT_SHAPES,
        metavar="SHAPE",
        help=f"shapes (T, B, I, H) of the hdetach.LSTM table (default: all but cell; "
        f"--shapes alone: none): {shapes}",
    )
    parser.add_argument(
        "--cells",
        nargs="*",
        choices=list(SHAPES),
        metavar="SHAPE",
        help="shapes (T, B, I, H) at which to time a step-by-step loop over hdetach.LSTMCell "
        "at each --p against the same loop over torch.nn.LSTMCell, same weights "
        f"(default: {' '.join(DEFAULT_CELLS)}; --cells alone: none)",
    )
    parser.add_argument(
        "--device",  # the default is chosen once torch is imported (table.run)
        help="torch device (default: cuda where available, else cpu)",
    )
    parser.add_argument(
        "--dtype",
        choices=["float32", "float64", "bfloat16"],
        default="float32",
        help="dtype of weights and inputs (default: float32)",
    )
    parser.add_argument(
        "--backends",
        nargs="+",
        default=["fused"],
        help="our backends to time (default: fused; 'reference' is slow; at p = 0 'auto' "
        "runs torch's own kernel except in CPU training on one or two threads at T x B >= 10,000 "
        "and H >= 64)",
    )
    parser.add_argument(
        "--p",
        nargs="+",
        type=float,
        default=[0.0, 0.25, 0.5],
        dest="ps",
        help="p_detach values for the authors' loop, our backends and hdetach.LSTMCell "
        "(default: 0 0.25 0.5)",
    )
    parser.add_argument(
        "--cpu-kernels",
        nargs="+",
        choices=["compiled", "python"],
        default=["compiled", "python"],
        help="on a CPU, time the fused backend on each of these kernels (HDETACH_CPU_KERNEL; "
        "default: compiled python)",
    )
    parser.add_argument(
        "--clock",
        choices=list(CLOCKS),
        default="wall",
        help="wall time (default), or cpu: the thread's CPU time, for --threads 1 on a loaded "
        "machine (time spent waiting for a core is not counted)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch.set_num_threads for the run (default: torch's default)",
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed rounds after one warm-up (default: 5)"
    )
    parser.add_argument(
        "--population",
        nargs="+",
        type=int,
        metavar="K",
        help="instead: the throughput of K LSTMs as one hdetach.PopulationLSTM against K "
        "run one after another and (CPU) K shared out over one process per core, for "
        "each K (float32, at the first --p)",
    )
    parser.add_argument("--output", help="also write the table (Markdown) to this file")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    for backend in args.backends:
        if backend not in BACKENDS:
            parser.error(f"--backends: unknown backend {backend!r}")
    for p in args.ps:
        if not 0 <= p <= 1:
            parser.error(f"--p: each value must be in [0, 1], got {p}")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.population and any(k < 1 for k in args.population):
        parser.error("--population: each K must be >= 1")
    if args.population and args.dtype != "float32":
        parser.error("--population measures float32")
    if args.population and args.cells is not None:
        parser.error("--cells: not with --population (which times hdetach.PopulationLSTM)")
    if args.population and not args.shapes:
        parser.error("--population needs at least one of --shapes")
    if args.cells is None:
        args.cells = [] if args.population else list(DEFAULT_CELLS)
    if not args.shapes and not args.cells:
        parser.error("nothing to time: --shapes and --cells are both empty")
    load("hdetach.experiments.bench.table:run")(parser, args)


if __name__ == "__main__":
    main()

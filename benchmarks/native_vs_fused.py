"""Forward+backward of torch's own LSTM kernel vs the fused backend with nothing detached.

    PYTHONPATH=src python benchmarks/native_vs_fused.py [--repeats 7] [--output FILE]

The measurement behind ``select_backend``'s CPU rule for ``"auto"`` (see the README,
"Backends"): one layer, float32, no detach mask, on a grid of (T, B, H) with input size
16. The two implementations take turns, one call each per round, and each cell is the
median over the rounds, so a slow spell of a shared machine hits both alike.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time

import torch

from hdetach.functional import lstm_layer

GRID_T = (100, 784)
GRID_B = (1, 8, 32, 100, 256)
GRID_H = (32, 64, 128, 256, 512)
INPUT = 16


def _fwd_bwd(forward, grad: torch.Tensor) -> float:
    start = time.perf_counter()
    forward().backward(grad)
    return (time.perf_counter() - start) * 1e3


def measure(steps: int, batch: int, hidden: int, repeats: int) -> tuple[float, float]:
    torch.manual_seed(0)
    native = torch.nn.LSTM(INPUT, hidden)
    x = torch.randn(steps, batch, INPUT)
    grad = torch.randn(steps, batch, hidden)
    zeros = torch.zeros(batch, hidden)
    params = list(native.parameters())
    calls = {
        "native": lambda: native(x)[0],
        "fused": lambda: lstm_layer(x, zeros, zeros, *params, backend="fused")[0],
    }
    times = {name: [] for name in calls}
    for round_ in range(repeats + 1):  # round 0 warms up
        for name, forward in calls.items():
            ms = _fwd_bwd(forward, grad)
            if round_:
                times[name].append(ms)
    return statistics.median(times["native"]), statistics.median(times["fused"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds per shape")
    parser.add_argument("--output", help="also write the table (Markdown) to this file")
    parser.add_argument(
        "--cells",
        nargs="+",
        metavar="T,B,H",
        help="time only these shapes (default: the grid, long sequences at small B*H)",
    )
    args = parser.parse_args()
    if args.cells:
        cells = [tuple(int(v) for v in cell.split(",")) for cell in args.cells]
    else:
        cells = [
            (steps, batch, hidden)
            for steps in GRID_T
            for batch in GRID_B
            for hidden in GRID_H
            if steps == 100 or batch * hidden <= 100 * 128  # the rule's boundary, if any
        ]
    lines = [
        "| T | B | H | B*H | native ms | fused ms | fused / native |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for steps, batch, hidden in cells:
        native_ms, fused_ms = measure(steps, batch, hidden, args.repeats)
        lines.append(
            f"| {steps} | {batch} | {hidden} | {batch * hidden} | {native_ms:.2f} "
            f"| {fused_ms:.2f} | {fused_ms / native_ms:.2f} |"
        )
        print(lines[-1], flush=True)
    header = (
        f"{datetime.date.today()}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}; float32, one layer, "
        f"input size {INPUT}, no detach mask; median of {args.repeats} interleaved rounds."
    )
    text = header + "\n\n" + "\n".join(lines) + "\n"
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()

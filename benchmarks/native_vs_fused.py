"""Forward+backward of torch's own LSTM kernel vs the fused backend with nothing detached.

    PYTHONPATH=src python benchmarks/native_vs_fused.py [--threads N] [--inference]
        [--repeats 7] [--cells T,B,H ...] [--output FILE]

The measurement behind ``select_backend``'s CPU rule for ``"auto"`` (``docs/speed.md``):
one layer, float32, no detach mask, on a grid of (T, B, H) with input size 16; training
(forward+backward) or, with ``--inference``, the forward alone under ``torch.no_grad``.
The fused backend runs as ``"auto"`` would run it: on the compiled CPU recurrence where
it can be built (the header says which). The two implementations take turns, one call
each per round, and each cell is the median over the rounds, so a slow spell of a shared
machine hits both alike.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time

import torch

from hdetach import settings
from hdetach.functional import lstm_layer
from hdetach.ops.fused import cpu_kernel

GRID_T = (100, 784)
GRID_B = (1, 8, 32, 100, 256)
GRID_H = (32, 64, 128, 256, 512)
INPUT = 16


def _fwd_bwd(forward, grad: torch.Tensor) -> float:
    start = time.perf_counter()
    forward().backward(grad)
    return (time.perf_counter() - start) * 1e3


def _fwd(forward, grad: torch.Tensor) -> float:
    with torch.no_grad():
        start = time.perf_counter()
        forward()
        return (time.perf_counter() - start) * 1e3


def measure(
    steps: int, batch: int, hidden: int, repeats: int, inference: bool = False
) -> tuple[float, float]:
    """Median milliseconds of (native, fused) for one call, training or inference."""
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
            ms = (_fwd if inference else _fwd_bwd)(forward, grad)
            if round_:
                times[name].append(ms)
    return statistics.median(times["native"]), statistics.median(times["fused"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds per shape")
    parser.add_argument("--output", help="also write the table (Markdown) to this file")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument(
        "--inference", action="store_true", help="time the forward alone, under no_grad"
    )
    parser.add_argument(
        "--cells",
        nargs="+",
        metavar="T,B,H",
        help="time only these shapes (default: the grid, long sequences at small B*H)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
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
        native_ms, fused_ms = measure(steps, batch, hidden, args.repeats, args.inference)
        lines.append(
            f"| {steps} | {batch} | {hidden} | {batch * hidden} | {native_ms:.2f} "
            f"| {fused_ms:.2f} | {fused_ms / native_ms:.2f} |"
        )
        print(lines[-1], flush=True)
    mode = "inference (forward, no_grad)" if args.inference else "training (forward+backward)"
    kernel = "eager steps" if cpu_kernel.unavailable_reason() else "compiled recurrence"
    header = (
        f"{datetime.date.today()}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}; float32, one layer, "
        f"input size {INPUT}, no detach mask; "
        f"{mode}; fused on the {kernel} (HDETACH_CPU_KERNEL={settings.cpu_kernel()}); "
        f"median of {args.repeats} interleaved rounds."
    )
    text = header + "\n\n" + "\n".join(lines) + "\n"
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()

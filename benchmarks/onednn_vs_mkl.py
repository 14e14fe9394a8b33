"""The fused backend's forward+backward with its products on oneDNN vs on torch.mm (MKL).

Side by side in one run, taking turns each round (median of rounds), with
``torch.nn.LSTM`` as the yardstick, at the copying and pixel-MNIST shapes, h-detach at
p = 0.25 (the fused backend; ``HDETACH_ONEDNN`` switches its kernel, read at each call).

    python benchmarks/onednn_vs_mkl.py --threads 1 2
"""

from __future__ import annotations

import argparse
import os

import torch

import hdetach
from hdetach.experiments.bench.timing import median_ms_in_turns

SHAPES = {"copy100": (120, 100, 1, 128), "pmnist": (784, 100, 1, 100)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(
        "| threads | shape (T, B, I, H) | torch.nn.LSTM ms | fused, MKL ms | fused, oneDNN ms "
        "| MKL / oneDNN | oneDNN vs torch.nn.LSTM |"
    )
    print("|---|---|---|---|---|---|---|")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name, (steps, batch, input_size, hidden) in SHAPES.items():
            torch.manual_seed(0)
            ours = hdetach.LSTM(input_size, hidden, p_detach=0.25, backend="fused")
            theirs = torch.nn.LSTM(input_size, hidden)
            x = torch.randn(steps, batch, input_size)
            grad = torch.randn(steps, batch, hidden)

            def step(model, kernel: str, x=x, grad=grad):
                def run() -> None:
                    os.environ["HDETACH_ONEDNN"] = kernel
                    model(x)[0].backward(grad)

                return run

            runs = {"torch": step(theirs, "1"), "mkl": step(ours, "0"), "onednn": step(ours, "1")}
            ms = median_ms_in_turns(runs, args.rounds, torch.device("cpu"))
            print(
                f"| {threads} | {name} {(steps, batch, input_size, hidden)} | {ms['torch']:.1f} "
                f"| {ms['mkl']:.1f} | {ms['onednn']:.1f} | {ms['mkl'] / ms['onednn']:.2f}x "
                f"| {ms['onednn'] / ms['torch']:.2f} |"
            )
    os.environ.pop("HDETACH_ONEDNN")


if __name__ == "__main__":
    main()

"""How the reference backend's time grows with the sequence length.

The reference backend (autograd through a plain loop over time) is the oracle every
backend is tested against, and ``results/paper/check_gradients.py`` runs it at the
paper's T = 784. This times its forward and backward in float64 on one thread at the
pixel-MNIST width (B = 100, H = 100, p = 0.25 mask) for several T and prints the time
per step, which stays flat when the backward is linear in T. Run it against two
checkouts (``PYTHONPATH=other/src``) to compare them.

    python benchmarks/reference_backward.py --steps 100 200 400 784
"""

from __future__ import annotations

import argparse
import time

import torch

from hdetach.ops.reference import reference_lstm_recurrence


def time_once(steps: int, batch: int = 100, hidden: int = 100) -> tuple[float, float]:
    """Seconds of one forward and of its backward."""
    gen = torch.Generator().manual_seed(0)
    gates_x = torch.randn(steps, batch, 4 * hidden, generator=gen, dtype=torch.float64)
    gates_x.requires_grad_()
    weight_hh = 0.1 * torch.randn(4 * hidden, hidden, generator=gen, dtype=torch.float64)
    weight_hh.requires_grad_()
    h0 = c0 = torch.zeros(batch, hidden, dtype=torch.float64)
    mask = torch.rand(steps, generator=gen) < 0.25
    start = time.perf_counter()
    out, _, _ = reference_lstm_recurrence(gates_x, h0, c0, weight_hh, mask)
    forward_done = time.perf_counter()
    out.sum().backward()
    return forward_done - start, time.perf_counter() - forward_done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 200, 400, 784])
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, one thread, float64, B = 100, H = 100\n")
    print("| T | forward, s | backward, s | backward per step, ms |")
    print("|---|---|---|---|")
    for steps in args.steps:
        forward, backward = time_once(steps)
        print(f"| {steps} | {forward:.2f} | {backward:.2f} | {1000 * backward / steps:.1f} |")


if __name__ == "__main__":
    main()

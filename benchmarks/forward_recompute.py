"""Could the fused backend's training forward run on torch's own LSTM kernel?

The h-detach forward is a plain LSTM's, so one route is: run torch's kernel (oneDNN
here), then recompute what the backward needs (the gates of every step with two large
matrix products, the cells with a cheap scan over time) and run only the backward
recurrence ourselves. This script times, side by side in one run (median of rounds,
taking turns), the forward that saves the activations each way, torch's forward alone,
and the matrix products' speed with MKL (torch.mm) and oneDNN, which explains the gap.

    python benchmarks/forward_recompute.py --threads 1 2
"""

from __future__ import annotations

import argparse
import functools

import torch

from hdetach.experiments.bench.timing import median_ms_in_turns
from hdetach.ops.fused import lstm as fused
from hdetach.ops.fused.products import block_product

SHAPES = {"copy100": (120, 100, 1, 128), "pmnist": (784, 100, 1, 100)}


def native_forward(x, h0, c0, weights):
    """torch's LSTM kernel (what torch.nn.LSTM runs): outputs of every step, h_n, c_n."""
    return torch._VF.lstm(x, (h0[None], c0[None]), weights, True, 1, 0.0, False, False, False)


def native_then_recompute(x, h0, c0, weights):
    """torch's kernel, then the activations the fused backward reads: gates (i, f, g, o),
    cells and tanh(cells) of every step."""
    w_ih, w_hh, b_ih, b_hh = weights
    out, _, _ = native_forward(x, h0, c0, weights)
    steps, batch, _ = x.shape
    hidden = w_hh.shape[1]
    # The two large products on the fused backend's kernel (oneDNN on this CPU).
    gates = x.new_empty(steps, batch, 4 * hidden)
    block_product(x, w_ih, out=gates, bias=b_ih + b_hh)
    recurrent = torch.empty_like(gates)
    block_product(torch.cat([h0[None], out[:-1]]), w_hh, out=recurrent)
    gates += recurrent
    gates[..., 2 * hidden : 3 * hidden] *= 2  # tanh(z) = 2 sigmoid(2z) - 1, as fused does
    gates.sigmoid_()
    i, f, g, _ = gates.chunk(4, 2)
    g.mul_(2).sub_(1)
    cells = i * g
    previous = c0
    for t in range(steps):  # c_t = f_t c_{t-1} + i_t g_t: the only sequential part
        cells[t].addcmul_(f[t], previous)
        previous = cells[t]
    return out, gates, cells, torch.tanh(cells)


def fused_forward_saving(x, h0, c0, weights):
    """The fused backend's forward as it runs in training (activations kept)."""
    w_ih, w_hh, b_ih, b_hh = weights
    return fused._forward(x, h0, c0, w_ih, w_hh, b_ih + b_hh, None, None, True)


def gemm_gflops(rows: int, inner: int, cols: int) -> dict[str, float]:
    """GFLOP/s of one (rows x inner) @ (inner x cols) product with MKL and with oneDNN."""
    a, w = torch.randn(rows, inner), torch.randn(cols, inner)
    out = torch.empty(rows, cols)
    runs = {
        "MKL (torch.mm)": lambda: torch.mm(a, w.t(), out=out),
        "oneDNN (mkldnn linear)": lambda: torch.ops.mkldnn._linear_pointwise(
            a, w, None, "none", [], ""
        ),
    }
    ms = median_ms_in_turns(runs, 50, torch.device("cpu"))
    return {name: 2 * rows * inner * cols / ms[name] / 1e6 for name in runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    print(
        "| threads | shape (T, B, I, H) | torch's forward ms | fused forward (saving) ms "
        "| torch's forward + recompute ms | recompute / fused |"
    )
    print("|---|---|---|---|---|---|")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name, (steps, batch, input_size, hidden) in SHAPES.items():
            torch.manual_seed(0)
            lstm = torch.nn.LSTM(input_size, hidden)
            weights = [w.detach() for w in lstm._flat_weights]
            x = torch.randn(steps, batch, input_size)
            h0, c0 = torch.zeros(batch, hidden), torch.zeros(batch, hidden)
            runs = {
                "native": native_forward,
                "fused": fused_forward_saving,
                "recompute": native_then_recompute,
            }
            ms = median_ms_in_turns(
                {k: functools.partial(fn, x, h0, c0, weights) for k, fn in runs.items()},
                args.rounds,
                torch.device("cpu"),
            )
            print(
                f"| {threads} | {name} {(steps, batch, input_size, hidden)} "
                f"| {ms['native']:.1f} | {ms['fused']:.1f} | {ms['recompute']:.1f} "
                f"| {ms['recompute'] / ms['fused']:.2f} |"
            )
        for label, shape in (("one step", (100, 128, 512)), ("all steps", (12000, 128, 512))):
            rates = ", ".join(f"{k} {v:.0f}" for k, v in gemm_gflops(*shape).items())
            print(
                f"\n{threads} thread(s), GFLOP/s of the recurrent product, {label} {shape}: {rates}"
            )


if __name__ == "__main__":
    main()

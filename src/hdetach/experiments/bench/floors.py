"""The floors a benchmark row is measured against: the matrix products alone, on the
fused backend's kernels (``matmul_floor``), and the FLOP floor on torch's fastest kernels
(``FlopFloor``)."""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch

from hdetach.experiments.bench.timing import timed_ms
from hdetach.ops.fused.products import add_outer_, block_product, product


def matmul_floor(steps, batch, input_size, hidden, device, dtype) -> Callable[[], None]:
    """Only the matrix products of one forward+backward at p = 0, into preallocated outputs,
    on the fused backend's product kernels (``ops/products.py``: oneDNN on a CPU)."""

    def rand(*shape):
        return torch.randn(*shape, device=device, dtype=dtype)

    w_ih, w_hh = rand(4 * hidden, input_size), rand(4 * hidden, hidden)
    w_hh_back, w_ih_back = rand(hidden, 4 * hidden), rand(input_size, 4 * hidden)
    x, all_dz, all_h = (
        rand(steps, batch, input_size),
        rand(steps, batch, 4 * hidden),
        rand(steps, batch, hidden),
    )
    h, z, dh = rand(batch, hidden), rand(batch, 4 * hidden), rand(batch, hidden)
    gates_x, d_x = rand(steps, batch, 4 * hidden), rand(steps, batch, input_size)
    d_w_ih, d_w_hh = rand(4 * hidden, input_size), rand(4 * hidden, hidden)

    def run() -> None:
        block_product(x, w_ih, out=gates_x)
        for _ in range(steps):
            product(h, w_hh, out=z, add=z)
        for _ in range(steps):
            product(z, w_hh_back, out=dh)
        add_outer_(d_w_hh, all_dz, all_h)
        add_outer_(d_w_ih, all_dz, x)
        block_product(all_dz, w_ih_back, out=d_x)

    return run


class FlopFloor:
    """The FLOP floor of one h-detach forward+backward: the products it must do, each on
    the faster of torch's own kernels (``torch.mm`` and oneDNN's linear, operands laid out
    as each kernel likes them), at the current thread count, run back to back.

    Products (B rows, H hidden, I inputs, T steps): h_{t-1} W_hh^T (B x H by H x 4H) at
    every step; dz_t W_hh (B x 4H by 4H x H) on the kept steps, round((1 - p) T) of them;
    the weight gradients dz^T h (4H x TB by TB x H) and dz^T x (4H x TB by TB x I) once.
    The faster kernel of each product is chosen once from short timings; the floor itself
    is timed as one run of all its products, in turn with the other rows, so that a
    loaded machine stretches it as much as them.
    """

    def __init__(self, steps, batch, input_size, hidden, device, dtype) -> None:
        def rand(*shape):
            return torch.randn(*shape, device=device, dtype=dtype)

        self.steps, self.device = steps, device
        h, w_hh, dz = rand(batch, hidden), rand(4 * hidden, hidden), rand(batch, 4 * hidden)
        all_dz, all_h, x = (
            rand(steps * batch, 4 * hidden),
            rand(steps * batch, hidden),
            rand(steps * batch, input_size),
        )
        # per product: (a, b) for a @ b on torch.mm; (a, b^T contiguous) for oneDNN's linear
        operands = {
            "step": ((h, w_hh.t()), (h, w_hh)),
            "back": ((dz, w_hh), (dz, w_hh.t().contiguous())),
            "w_hh": ((all_dz.t(), all_h), (all_dz.t().contiguous(), all_h.t().contiguous())),
            "w_ih": ((all_dz.t(), x), (all_dz.t().contiguous(), x.t().contiguous())),
        }
        onednn = (
            device.type == "cpu" and dtype == torch.float32 and torch.backends.mkldnn.is_available()
        )
        self.kernels: dict[str, list[Callable[[], object]]] = {}
        for name, ((a, b), (a1, w1)) in operands.items():
            out = torch.mm(a, b)
            self.kernels[name] = [lambda a=a, b=b, out=out: torch.mm(a, b, out=out)]
            if onednn:
                self.kernels[name].append(lambda a1=a1, w1=w1: _onednn_linear(a1, w1))
        self.chosen: dict[str, Callable[[], object]] = {}

    def choose(self) -> dict[str, int]:
        """Pick each product's faster kernel (median of a few calls); 0 torch.mm, 1 oneDNN."""
        picks = {}
        for name, kernels in self.kernels.items():
            calls = 5 if name.startswith("w_") else 20
            ms = [
                statistics.median(timed_ms(kernel, self.device) for _ in range(calls))
                for kernel in kernels
            ]
            picks[name] = ms.index(min(ms))
            self.chosen[name] = kernels[picks[name]]
        return picks

    def run(self, p: float) -> Callable[[], None]:
        """One forward+backward's products at ``p``, on the chosen kernels."""
        kept = round((1 - p) * self.steps)

        def products() -> None:
            if not self.chosen:
                self.choose()
            step, back = self.chosen["step"], self.chosen["back"]
            for _ in range(self.steps):
                step()
            for _ in range(kept):
                back()
            self.chosen["w_hh"]()
            self.chosen["w_ih"]()

        return products


def _onednn_linear(a: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """a @ weight^T on oneDNN (``torch.ops.mkldnn._linear_pointwise``, as ``products.py``)."""
    return torch.ops.mkldnn._linear_pointwise(a, weight, None, "none", [], "")

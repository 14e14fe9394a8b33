"""Side-by-side GPU timings of one LSTM layer: cuDNN, the authors' loop, hdetach backends.

Run from the repository root on a CUDA machine (``PYTHONPATH=src python
benchmarks/gpu_bench.py``). For each shape (steps, batch, input, hidden) it times one
minibatch's forward+backward and forward alone (under ``no_grad``) of

* ``torch.nn.LSTM`` (cuDNN), the baseline of every ratio;
* a loop built like the authors' code: ``nn.LSTMCell`` over time, one host-side
  Bernoulli draw per step (numpy), ``h.detach()`` on the drawn steps;
* ``hdetach.LSTM`` on the fused and on the triton backend at p_detach in {0, 0.25, 0.5}
  (one decision per step for the whole batch, as in the paper);
* bfloat16: cuDNN and the triton backend at p = 0.25.

then the float32 error over 784 steps vs a float64 reference for each triton
``input_precision``, and prints it all as markdown, also written to
``benchmarks/results_<card>.md``. With ``--split`` it instead times cuDNN and the triton
backend with ``HDETACH_TRITON_SPLIT_HIDDEN=1`` (hidden units spread over programs that meet at a
per-step barrier) and appends that table: a separate run, so that a hang there cannot
lose the main table.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import triton
from torch import nn
from triton.testing import do_bench

import hdetach
from hdetach.experiments.bench.table import AuthorsLoop
from hdetach.ops.reference import reference_lstm_recurrence
from hdetach.ops.triton.loader import triton_backend
from hdetach.ops.triton.lstm import FLOAT32_PRECISIONS
from hdetach.settings import overridden

DEVICE = "cuda"
ACCURACY_SHAPE = (784, 100, 100)  # pixel MNIST: (steps, batch, hidden)

SHAPES = {
    "copying T=300": (320, 100, 1, 128),
    "pixel MNIST": (784, 100, 1, 100),
    "(100, 64, 512, 512)": (100, 64, 512, 512),
}
PS = (0.0, 0.25, 0.5)


def _milliseconds(fn: Callable[[], object]) -> float:
    """Median time of ``fn`` in ms (CUDA events, L2 flushed between runs)."""
    return do_bench(fn, warmup=50, rep=300, return_mode="median")


def _train_step(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """One forward+backward of ``model`` on ``x`` with a fixed output gradient."""
    with torch.no_grad():
        out, _ = model(x)
    grad = torch.randn_like(out)

    def step() -> None:
        out, _ = model(x)
        out.backward(grad)

    return step


def _forward(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def forward() -> None:
        with torch.no_grad():
            model(x)

    return forward


def _rows(
    steps: int, batch: int, inputs: int, hidden: int, split: bool
) -> list[tuple[str, float, float]]:
    """(method, forward+backward ms, forward ms) for one shape; NaN where a method failed.

    ``split``: only cuDNN and the triton backend with split hidden units (ops/triton_lstm.py).
    """
    device = DEVICE
    x = torch.randn(steps, batch, inputs, device=device)
    rows = []

    def measure(name: str, model: nn.Module, x: torch.Tensor, forward_too: bool) -> None:
        try:
            train = _milliseconds(_train_step(model, x))
            forward = _milliseconds(_forward(model, x)) if forward_too else float("nan")
        except Exception as error:  # one broken method must not lose the whole table
            print(f"  {name}: {type(error).__name__}: {error}", file=sys.stderr)
            train = forward = float("nan")
        rows.append((name, train, forward))
        print(f"  {name:<32} {train:9.3f} ms {forward:9.3f} ms", file=sys.stderr, flush=True)

    measure("cuDNN torch.nn.LSTM", nn.LSTM(inputs, hidden).to(device), x, True)
    if split:
        with overridden("HDETACH_TRITON_SPLIT_HIDDEN", "1"):  # read by the backend at each call
            for i, p in enumerate(PS):
                model = hdetach.LSTM(inputs, hidden, p_detach=p, backend="triton").to(device)
                measure(f"hdetach triton split p={p}", model, x, forward_too=i == 0)
        return rows
    measure("authors' loop p=0.25", AuthorsLoop(inputs, hidden, 0.25).to(device), x, True)
    for backend in ("fused", "triton"):
        for i, p in enumerate(PS):
            model = hdetach.LSTM(inputs, hidden, p_detach=p, backend=backend).to(device)
            measure(f"hdetach {backend} p={p}", model, x, forward_too=i == 0)
    bf16 = x.bfloat16()
    measure("cuDNN bf16", nn.LSTM(inputs, hidden).to(device, torch.bfloat16), bf16, True)
    model = hdetach.LSTM(inputs, hidden, p_detach=0.25, backend="triton")
    measure("hdetach triton bf16 p=0.25", model.to(device, torch.bfloat16), bf16, True)
    return rows


def _worst_error(actual: list[torch.Tensor], expected: list[torch.Tensor]) -> float:
    """Largest max |a - e| / max |e| over corresponding tensors."""
    return max(
        ((a.double() - e).abs().max() / e.abs().max()).item()
        for a, e in zip(actual, expected, strict=True)
    )


def _accuracy_lines() -> list[str]:
    """Relative error of the triton backend vs a float64 reference at ``ACCURACY_SHAPE``."""
    steps, batch, hidden = ACCURACY_SHAPE
    gen = torch.Generator(device=DEVICE).manual_seed(0)

    def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, device=DEVICE, dtype=torch.float64, generator=gen) * scale

    gates_x, d_out = randn(steps, batch, 4 * hidden), randn(steps, batch, hidden)
    h0, c0 = randn(batch, hidden, scale=0.5), randn(batch, hidden, scale=0.5)
    weight_hh = randn(4 * hidden, hidden, scale=hidden**-0.5)
    mask = torch.rand(steps, device=DEVICE, generator=gen) < 0.25

    def results(fn: Callable, dtype: torch.dtype) -> list[torch.Tensor]:
        leaves = [x.detach().to(dtype).requires_grad_() for x in (gates_x, h0, c0, weight_hh)]
        out, h_n, c_n = fn(*leaves)
        out.backward(d_out.to(dtype))
        return [out, h_n, c_n, *(x.grad for x in leaves)]

    expected = results(lambda *a: reference_lstm_recurrence(*a, mask, "h"), torch.float64)
    lines = [
        f"## float32 error vs float64 over {steps} steps (batch {batch}, hidden {hidden}, p=0.25)",
        "",
        "Worst of max |x - x64| / max |x64| over out, h_n, c_n and the gradients of "
        "gates_x, h0, c0, W_hh.",
        "",
        "| triton input_precision | worst relative error |",
        "|---|---:|",
    ]
    recurrence = triton_backend(torch.device(DEVICE)).triton_lstm_recurrence
    for precision in FLOAT32_PRECISIONS:

        def fn(*args: torch.Tensor, precision: str = precision):
            return recurrence(*args, mask, "h", input_precision=precision)

        lines.append(f"| {precision} | {_worst_error(results(fn, torch.float32), expected):.1e} |")
    return [*lines, ""]


def _format_ms(ms: float, reference: float) -> str:
    """'time | ratio' cells, blank where not measured."""
    return " | " if math.isnan(ms) else f"{ms:.3f} | {ms / reference:.2f}"


def main(split: bool) -> None:
    torch.manual_seed(0)
    card = torch.cuda.get_device_name()
    slug = re.sub(r"[^a-z0-9]+", "_", card.lower()).strip("_")
    path = Path(__file__).resolve().parent / f"results_{slug}.md"
    lines = [
        f"# LSTM layer timings on {card}",
        "",
        f"torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, "
        f"triton {triton.__version__}; float32 unless marked; one minibatch; median ms "
        "(triton.testing.do_bench); ratio = time / cuDNN time of the same dtype and shape, "
        "measured in this run. Forward alone is under torch.no_grad().",
        "",
    ]
    if split:
        lines = [
            "# Hidden units split over programs (HDETACH_TRITON_SPLIT_HIDDEN=1), same card",
            "",
            "Measured in a second run, side by side with cuDNN again.",
            "",
        ]
    for label, shape in SHAPES.items():
        print(f"{label} {shape}", file=sys.stderr, flush=True)
        rows = _rows(*shape, split=split)
        base = {name: (train, forward) for name, train, forward in rows}
        lines += [
            f"## {label}: (steps, batch, input, hidden) = {shape}",
            "",
            "| method | fwd+bwd ms | ratio | fwd ms | ratio |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, train, forward in rows:
            ref_train, ref_forward = base["cuDNN bf16" if "bf16" in name else "cuDNN torch.nn.LSTM"]
            cells = f"{_format_ms(train, ref_train)} | {_format_ms(forward, ref_forward)}"
            lines.append(f"| {name} | {cells} |")
        lines.append("")
    if not split:
        try:
            lines += _accuracy_lines()
        except Exception as error:
            lines += [f"accuracy check failed: {type(error).__name__}: {error}", ""]
    table = "\n".join(lines)
    print(table)
    # The split run appends to the table of the plain run made just before it.
    with path.open("a" if split else "w") as results:
        results.write(table + "\n")
    print(f"written to {path}")


if __name__ == "__main__":
    main(split="--split" in sys.argv[1:])

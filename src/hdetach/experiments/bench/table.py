"""The speed tables of ``hdetach bench`` (options in ``cli``): every implementation timed on
each shape, side by side, and the cell loops; see ``cli`` for their rows."""

from __future__ import annotations

import argparse
import platform
import statistics
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

import hdetach
from hdetach.experiments.bench.cli import SHAPES
from hdetach.experiments.bench.floors import FlopFloor, matmul_floor
from hdetach.experiments.bench.population import format_population_table, population_rows
from hdetach.experiments.bench.timing import set_clock, timed_ms
from hdetach.settings import overridden


class AuthorsLoop(nn.Module):
    """The per-step loop of the original code: ``nn.LSTMCell`` over time, one host-side
    Bernoulli draw per step (numpy), ``h.detach()`` on the drawn steps (when training)."""

    def __init__(self, input_size: int, hidden_size: int, p_detach: float, **factory) -> None:
        super().__init__()
        self.cell = nn.LSTMCell(input_size, hidden_size, **factory)
        self.p_detach = p_detach
        self.rng = np.random.default_rng(0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        h = x.new_zeros(x.shape[1], self.cell.hidden_size)
        c = torch.zeros_like(h)
        outputs = []
        for t in range(x.shape[0]):
            if self.training and torch.is_grad_enabled() and self.rng.random() < self.p_detach:
                h = h.detach()
            h, c = self.cell(x[t], (h, c))
            outputs.append(h)
        return torch.stack(outputs), (h, c)


def _with_cpu_kernel(kernel: str | None, fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` run with ``HDETACH_CPU_KERNEL=kernel`` (unchanged for None)."""
    if kernel is None:
        return fn

    def run():
        with overridden("HDETACH_CPU_KERNEL", kernel):
            return fn()

    return run


# A row of the table, its forward (None: no forward column) and its forward+backward call.
Entry = tuple[dict, Callable[[], torch.Tensor] | None, Callable[[], object]]


def _entry(
    row: dict, forward: Callable[[], torch.Tensor], grad: torch.Tensor, kernel: str | None = None
) -> Entry:
    """The row timed by ``forward`` and by ``forward().backward(grad)`` (on ``kernel``)."""

    def fwd_bwd() -> None:
        forward().backward(grad)

    return row, _with_cpu_kernel(kernel, forward), _with_cpu_kernel(kernel, fwd_bwd)


def benchmark_shape(
    name: str,
    device: torch.device,
    dtype: torch.dtype,
    backends: list[str],
    ps: list[float],
    repeats: int,
    cpu_kernels: list[str] | None = None,
) -> list[dict]:
    """Time every implementation on one shape; one dict per row of the table.

    The implementations take turns, one call each per round, and each row reports the
    median over the rounds: a slow spell of a shared machine then hits every row alike
    instead of whichever happened to be running.
    """
    steps, batch, input_size, hidden = SHAPES[name]
    torch.manual_seed(0)
    x = torch.randn(steps, batch, input_size, device=device, dtype=dtype)
    grad = torch.randn(steps, batch, hidden, device=device, dtype=dtype)
    entries: list[Entry] = []

    def add(impl: str, p: float | None, forward: Callable[[], torch.Tensor], kernel=None) -> None:
        entries.append(_entry({"shape": name, "impl": impl, "p": p}, forward, grad, kernel))

    torch_lstm = nn.LSTM(input_size, hidden, device=device, dtype=dtype)
    add("torch.nn.LSTM", None, lambda: torch_lstm(x)[0])
    for p in ps:
        loop = AuthorsLoop(input_size, hidden, p, device=device, dtype=dtype)
        add("authors' loop", p, lambda loop=loop: loop(x)[0])
    kernels = cpu_kernels if device.type == "cpu" and cpu_kernels else [None]
    for backend in backends:
        for kernel in kernels if backend == "fused" else [None]:
            impl = f"hdetach {backend}" + ("" if kernel is None else f", {kernel}")
            for p in ps:
                ours = hdetach.LSTM(
                    input_size, hidden, p_detach=p, backend=backend, device=device, dtype=dtype
                )
                add(impl, p, lambda ours=ours: ours(x)[0], kernel)
    floor = matmul_floor(steps, batch, input_size, hidden, device, dtype)
    entries.append(({"shape": name, "impl": "matmul floor", "p": 0.0}, None, floor))
    flop_floor = FlopFloor(steps, batch, input_size, hidden, device, dtype)
    for p in sorted({0.0, *ps}):
        entries.append(({"shape": name, "impl": "FLOP floor", "p": p}, None, flop_floor.run(p)))
    return _rows(entries, _timed_rounds(entries, repeats, device))


TORCH_CELL_LOOP = "torch.nn.LSTMCell loop"
HDETACH_CELL_LOOP = "hdetach.LSTMCell loop"


def cell_loop(cell: nn.LSTMCell, x: torch.Tensor) -> torch.Tensor:
    """The stacked outputs h_1..h_T of ``cell`` stepped over ``x`` (T, B, I) from a zero
    state. The state is passed to every step, the first too: ``hdetach.LSTMCell`` draws
    only where it is given one."""
    h = x.new_zeros(x.shape[1], cell.hidden_size)
    c = torch.zeros_like(h)
    outputs = []
    for t in range(x.shape[0]):
        h, c = cell(x[t], (h, c))
        outputs.append(h)
    return torch.stack(outputs)


def same_weight_cells(
    input_size: int, hidden: int, ps: list[float], device: torch.device, dtype: torch.dtype
) -> tuple[nn.LSTMCell, list[hdetach.LSTMCell]]:
    """A ``torch.nn.LSTMCell`` and, for each p, an ``hdetach.LSTMCell(p_detach=p)`` with
    its weights (copies: each has its own gradients)."""
    torch_cell = nn.LSTMCell(input_size, hidden, device=device, dtype=dtype)
    ours = []
    for p in ps:
        cell = hdetach.LSTMCell(input_size, hidden, device=device, dtype=dtype, p_detach=p)
        cell.load_state_dict(torch_cell.state_dict())
        ours.append(cell)
    return torch_cell, ours


def benchmark_cells(
    name: str, device: torch.device, dtype: torch.dtype, ps: list[float], repeats: int
) -> list[dict]:
    """Time the cell loops on one shape: at each p the loop over ``hdetach.LSTMCell``
    right after the same loop over ``torch.nn.LSTMCell`` (same weights, nothing
    detached), all taking turns as in ``benchmark_shape``; one dict per row."""
    steps, batch, input_size, hidden = SHAPES[name]
    torch.manual_seed(0)
    x = torch.randn(steps, batch, input_size, device=device, dtype=dtype)
    grad = torch.randn(steps, batch, hidden, device=device, dtype=dtype)
    torch_cell, ours = same_weight_cells(input_size, hidden, ps, device, dtype)
    entries: list[Entry] = []
    for p, cell in zip(ps, ours):
        for impl, module in ((TORCH_CELL_LOOP, torch_cell), (HDETACH_CELL_LOOP, cell)):
            row = {"shape": name, "impl": impl, "p": p}
            entries.append(_entry(row, lambda module=module: cell_loop(module, x), grad))
    return _rows(entries, _timed_rounds(entries, repeats, device))


def _timed_rounds(entries: list[Entry], repeats: int, device: torch.device) -> list[dict]:
    """Per entry, its times (ms) per round: "fwd" (no grad), "train_fwd", "bwd" (fwd+bwd);
    round 0 warms up. The entries take turns, one call each per round."""

    def forward_only(forward: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                forward()

        return run

    times: list[dict[str, list[float]]] = [{"fwd": [], "train_fwd": [], "bwd": []} for _ in entries]
    for round_ in range(repeats + 1):
        for k, (row, forward, fwd_bwd) in enumerate(entries):
            # The reference backend is a loop too: one timed round keeps the run short.
            if row["impl"] == "hdetach reference" and round_ > 1:
                continue
            if forward is not None:
                times[k]["fwd"].append(timed_ms(forward_only(forward), device))
                times[k]["train_fwd"].append(timed_ms(forward, device))  # graph recorded, dropped
            times[k]["bwd"].append(timed_ms(fwd_bwd, device))
    return times


def _rows(entries: list[Entry], times: list[dict[str, list[float]]]) -> list[dict]:
    """Each entry's row: the median of its timed rounds, and its FLOP floor (p = 0 for
    torch.nn.LSTM; None where no floor was timed, as for the cell loops)."""
    floors = {
        row["p"]: statistics.median(times[k]["bwd"][1:])
        for k, (row, _, _) in enumerate(entries)
        if row["impl"] == "FLOP floor"
    }
    rows = []
    for k, (row, _, _) in enumerate(entries):
        fwd, bwd = times[k]["fwd"][1:], times[k]["bwd"][1:]
        train_fwd = times[k]["train_fwd"][1:]
        rows.append(
            {
                **row,
                "fwd_ms": statistics.median(fwd) if fwd else None,
                "train_fwd_ms": statistics.median(train_fwd) if train_fwd else None,
                "fwd_bwd_ms": statistics.median(bwd),
                "flop_floor_ms": floors.get(row["p"] or 0.0),
            }
        )
    return rows


def format_table(rows: list[dict]) -> str:
    """Markdown table with ratios against torch.nn.LSTM and the authors' loop of the same
    shape, and against the FLOP floor at the row's p (p = 0 for torch.nn.LSTM)."""
    lines = [
        "| shape (T, B, I, H) | implementation | p | forward ms (no grad) "
        "| forward ms (training) | fwd+bwd ms "
        "| vs torch.nn.LSTM | speed-up vs authors' loop (same p) | vs FLOP floor |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        same_shape = [r for r in rows if r["shape"] == row["shape"]]
        torch_ms = next(r["fwd_bwd_ms"] for r in same_shape if r["impl"] == "torch.nn.LSTM")
        loops = [r for r in same_shape if r["impl"] == "authors' loop" and r["p"] == row["p"]]
        loop_ms = loops[0]["fwd_bwd_ms"] if loops else None
        fwd = "" if row["fwd_ms"] is None else f"{row['fwd_ms']:.1f}"
        train_fwd = "" if row.get("train_fwd_ms") is None else f"{row['train_fwd_ms']:.1f}"
        p = "" if row["p"] is None else f"{row['p']:g}"
        vs_loop = "" if loop_ms is None else f"{loop_ms / row['fwd_bwd_ms']:.2f}x"
        lines.append(
            f"| {row['shape']} {SHAPES[row['shape']]} | {row['impl']} | {p} | {fwd} | {train_fwd} "
            f"| {row['fwd_bwd_ms']:.1f} | {row['fwd_bwd_ms'] / torch_ms:.2f} | {vs_loop} "
            f"| {row['fwd_bwd_ms'] / row['flop_floor_ms']:.2f}x |"
        )
    return "\n".join(lines)


def format_cell_table(rows: list[dict]) -> str:
    """Markdown table of the cell loops, with each row's ratio against the torch.nn.LSTMCell
    loop of the same shape and p (timed next to it)."""
    lines = [
        "| cell shape (T, B, I, H) | implementation | p | forward ms (no grad) "
        "| forward ms (training) | fwd+bwd ms | vs torch.nn.LSTMCell loop (same p) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        torch_ms = next(
            r["fwd_bwd_ms"]
            for r in rows
            if r["impl"] == TORCH_CELL_LOOP and r["shape"] == row["shape"] and r["p"] == row["p"]
        )
        lines.append(
            f"| {row['shape']} {SHAPES[row['shape']]} | {row['impl']} | {row['p']:g} "
            f"| {row['fwd_ms']:.2f} | {row['train_fwd_ms']:.2f} | {row['fwd_bwd_ms']:.2f} "
            f"| {row['fwd_bwd_ms'] / torch_ms:.2f}x |"
        )
    return "\n".join(lines)


CELL_TABLE_TITLE = (
    "Cell loops: forward+backward of a step-by-step loop's stacked outputs, hdetach.LSTMCell "
    "against torch.nn.LSTMCell with the same weights, timed next to each other at each p."
)


def machine_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, {platform.system()}"
    )


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Measure what ``hdetach bench``'s options (``cli``, checked there) ask, print the
    table and write it to ``--output``; what only torch can check is refused here."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu" and torch.get_num_threads() != 1:
        parser.error("--clock cpu measures one thread: add --threads 1")
    set_clock(args.clock)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    dtype = getattr(torch, args.dtype)
    if args.population:
        table = _population_table(args, device)
    else:
        tables = []
        rows = []
        for shape in args.shapes:
            rows += benchmark_shape(
                shape, device, dtype, args.backends, args.ps, args.repeats, args.cpu_kernels
            )
            print(f"measured {shape}", flush=True)
        if rows:
            tables.append(format_table(rows))
        cell_rows = []
        for shape in args.cells:
            cell_rows += benchmark_cells(shape, device, dtype, args.ps, args.repeats)
            print(f"measured the cell loops at {shape}", flush=True)
        if cell_rows:
            tables.append(f"{CELL_TABLE_TITLE}\n\n{format_cell_table(cell_rows)}")
        table = "\n\n".join(tables)
    text = (
        f"Machine: {machine_description(device)}; dtype {args.dtype}; clock {args.clock}"
        f"\n\n{table}\n"
    )
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)


def _population_table(args: argparse.Namespace, device: torch.device) -> str:
    p = args.ps[0]
    rows = []
    for shape in args.shapes:
        rows += population_rows(shape, SHAPES[shape], args.population, p, args.repeats, str(device))
    return f"p_detach {p:g}\n\n" + format_population_table(rows, SHAPES)

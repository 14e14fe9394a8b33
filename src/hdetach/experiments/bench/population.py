"""Population throughput: K LSTMs as one ``PopulationLSTM`` against the ways to run K alone.

    hdetach bench --population 1 2 4 8 16 --shapes copy100 pmnist

For each shape and K, one training step's forward and backward (loss: a fixed random
projection of the outputs; h-detach at ``--p``, each member its own masks) of:

* ``population, batched``: one ``hdetach.PopulationLSTM`` of K members on the fused
  backend (triton with ``HDETACH_TRITON_AUTO=1``), all threads;
* ``population, auto``: the same with ``backend="auto"`` (on a CPU: the members in turn);
* ``one after another``: K ``hdetach.LSTM``s, each step in turn, all threads;
* ``parallel processes`` (CPU only): K ``hdetach.LSTM``s shared out over as many
  one-thread processes as the others use threads, all processes stepping at once.

Throughput is member-steps per second; the three take turns, round after round, and
each reports its median round.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable

import torch

import hdetach
from hdetach.experiments.bench.timing import median_ms_in_turns
from hdetach.settings import triton_in_auto

# The batched population's backend: "fused", or "triton" where HDETACH_TRITON_AUTO=1 and
# the kernels apply (CUDA); "auto" on a CPU runs the members one after another.
BATCHED = "triton" if triton_in_auto() else "fused"
# Filled in each worker process of the "parallel processes" row by _start_worker.
_WORKER: dict = {}


def _lone_models(count: int, shape: tuple, p: float, seed: int, device: str = "cpu") -> list:
    """``count`` (model, input, output gradient) triples for the shape (T, B, I, H)."""
    steps, batch, input_size, hidden = shape
    torch.manual_seed(seed)
    return [
        (
            hdetach.LSTM(input_size, hidden, p_detach=p, device=device),
            torch.randn(steps, batch, input_size, device=device),
            torch.randn(steps, batch, hidden, device=device),
        )
        for _ in range(count)
    ]


def _step_each(models: list) -> None:
    for model, x, grad in models:
        model(x)[0].backward(grad)


def _start_worker(count: int, shape: tuple, p: float, seed: int) -> None:
    torch.set_num_threads(1)
    _WORKER["models"] = _lone_models(count, shape, p, seed)


def _worker_step(_: int) -> None:
    _step_each(_WORKER["models"])


def _population(
    members: int, shape: tuple, p: float, device: str, backend: str
) -> Callable[[], None]:
    steps, batch, input_size, hidden = shape
    torch.manual_seed(0)
    population = hdetach.PopulationLSTM(
        members, input_size, hidden, p_detach=p, device=device, backend=backend
    )
    x = torch.randn(members, steps, batch, input_size, device=device)
    grad = torch.randn(members, steps, batch, hidden, device=device)
    return lambda: population(x)[0].backward(grad)


def _parallel(members: int, shape: tuple, p: float, cores: int):
    """(step function, pools to close): members shared out over ``cores`` processes."""
    shares = [members // cores + (k < members % cores) for k in range(cores)]
    context = multiprocessing.get_context("spawn")  # no threads inherited from this process
    pools = [
        context.Pool(1, _start_worker, (share, shape, p, k))
        for k, share in enumerate(shares)
        if share
    ]

    def step() -> None:
        pending = [pool.apply_async(_worker_step, (0,)) for pool in pools]
        for result in pending:
            result.get()

    return step, pools


def population_rows(
    shape_name: str, shape: tuple, sizes: list[int], p: float, repeats: int, device: str = "cpu"
) -> list[dict]:
    """One row per (K, implementation): median ms per round of K member-steps. The
    models use the default backend ("auto": fused, or triton with HDETACH_TRITON_AUTO=1)."""
    cores = torch.get_num_threads()  # every row gets the same cores: threads, or processes
    cuda = torch.device(device).type == "cuda"
    rows = []
    for members in sizes:
        lone = _lone_models(members, shape, p, 0, device)
        runs = {
            "population, batched": _population(members, shape, p, device, BATCHED),
            "population, auto": _population(members, shape, p, device, "auto"),
            "one after another": lambda lone=lone: _step_each(lone),
        }
        pools = []
        if not cuda:
            parallel, pools = _parallel(members, shape, p, cores)
            runs[f"parallel processes ({cores} x 1 thread)"] = parallel
        try:
            medians = median_ms_in_turns(runs, repeats, torch.device(device))
        finally:
            for pool in pools:
                pool.close()
                pool.join()
        for name, median in medians.items():
            rows.append(
                {
                    "shape": shape_name,
                    "K": members,
                    "impl": name,
                    "ms": median,
                    "member_steps_per_s": members / median * 1e3,
                }
            )
        print(f"measured {shape_name} K={members}", flush=True)
    return rows


def format_population_table(rows: list[dict], shapes: dict) -> str:
    """Markdown: throughput per row, and the population's speed-up over the best other way."""
    lines = [
        "| shape (T, B, I, H) | K | implementation | ms per round | member-steps/s "
        "| population speed-up vs the best other |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        same = [r for r in rows if (r["shape"], r["K"]) == (row["shape"], row["K"])]
        speedup = ""
        if row["impl"].startswith("population"):
            best = max(
                r["member_steps_per_s"] for r in same if not r["impl"].startswith("population")
            )
            speedup = f"{row['member_steps_per_s'] / best:.2f}x"
        lines.append(
            f"| {row['shape']} {shapes[row['shape']]} | {row['K']} | {row['impl']} "
            f"| {row['ms']:.0f} | {row['member_steps_per_s']:.1f} | {speedup} |"
        )
    for row in rows:
        if row["shape"] == "pmnist" and row["impl"] == "population, batched":
            batch = shapes["pmnist"][1]
            epoch_s = 60000 / batch * row["ms"] / 1e3  # the LSTM's forward and backward only
            lines.append(
                f"\npixel MNIST, a population of {row['K']}: one epoch of 60,000 images "
                f"(forward and backward of the LSTM) {epoch_s / 60:.1f} min; 200 epochs "
                f"{200 * epoch_s / 3600:.1f} h"
            )
    return "\n".join(lines)

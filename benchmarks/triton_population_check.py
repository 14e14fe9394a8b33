"""GPU check of the triton backend's member dimension at the pixel-MNIST shape.

K = 10 independent LSTMs (T = 784, B = 100, H = 128; the input projection, I = 1, is
done outside the recurrence) run as one population call (weight_hh (K, 4H, H), K * B
rows) and as K single-model calls, each member with its own per-step detach mask
(p = 0.25, one decision per step for the member's whole batch, as in the paper).

1. Check: the population's outputs and gradients equal the K single calls'.
2. Time one training step of the recurrence (forward + backward) both ways, and the
   fused backend's single calls (the other single-model candidate), and print
   member-steps per second (a member-step: one member's forward + backward on one
   minibatch) and the population's speed-up over the best single-model backend.

Run from the repository root on a CUDA machine:
``PYTHONPATH=src python benchmarks/triton_population_check.py``. Without CUDA it says
so and exits 0; it exits 1 if the check fails.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch

TOLERANCE = 1e-4  # max |population - single| / max |single|, as the CUDA tests' bar
NAMES = ("out", "h_n", "c_n", "d_gates_x", "d_h0", "d_c0", "d_weight_hh")


def _problem(
    members: int,
    steps: int,
    batch: int,
    hidden: int,
    p_detach: float,
    seed: int,
    device: str = "cuda",
):
    """A population's float32 tensors: gates_x (T, K B, 4H) from one pixel per step,
    h0, c0 (K B, H), weight_hh (K, 4H, H), step masks (K, T) and the gradient of out."""
    gen = torch.Generator(device=device).manual_seed(seed)

    def rand(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, device=device) * scale

    pixels = rand(steps, members, batch, 1)
    weight_ih = rand(members, 4 * hidden, 1, scale=hidden**-0.5)
    bias = rand(members, 4 * hidden, scale=0.1)
    gates_x = torch.einsum("tkbi,kgi->tkbg", pixels, weight_ih) + bias[:, None]
    return {
        "gates_x": gates_x.reshape(steps, members * batch, 4 * hidden),
        "h0": rand(members * batch, hidden, scale=0.1),
        "c0": rand(members * batch, hidden, scale=0.1),
        "weight_hh": rand(members, 4 * hidden, hidden, scale=hidden**-0.5),
        "step_masks": torch.rand(members, steps, generator=gen, device=device) < p_detach,
        "d_out": rand(steps, members * batch, hidden),
    }


def _train_step(recurrence: Callable, inputs: list[torch.Tensor], mask, d_out) -> Callable:
    """fn() -> [out, h_n, c_n, d_gates_x, d_h0, d_c0, d_weight_hh] of one forward+backward."""
    leaves = [x.detach().requires_grad_() for x in inputs]

    def step() -> list[torch.Tensor]:
        out, h_n, c_n = recurrence(*leaves, mask)
        return [out, h_n, c_n, *torch.autograd.grad(out, leaves, d_out)]

    return step


def _population_step(problem: dict, recurrence: Callable) -> Callable:
    members, steps = problem["step_masks"].shape
    batch = problem["h0"].shape[0] // members
    # Member k's decisions on its own rows: (T, K) -> (T, K B).
    mask = problem["step_masks"].t().repeat_interleave(batch, dim=1)
    inputs = [problem[name] for name in ("gates_x", "h0", "c0", "weight_hh")]
    return _train_step(recurrence, inputs, mask, problem["d_out"])


def _single_steps(problem: dict, recurrence: Callable) -> list[Callable]:
    """One training step per member, on its own contiguous copy of its rows (as if alone)."""
    members = problem["weight_hh"].shape[0]
    batch = problem["h0"].shape[0] // members
    steps = []
    for k in range(members):
        rows = slice(k * batch, (k + 1) * batch)
        inputs = [problem["gates_x"][:, rows], problem["h0"][rows], problem["c0"][rows]]
        inputs = [x.contiguous() for x in (*inputs, problem["weight_hh"][k])]
        d_out = problem["d_out"][:, rows].contiguous()
        steps.append(_train_step(recurrence, inputs, problem["step_masks"][k], d_out))
    return steps


def _as_population(results: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    """The K single calls' results laid out as a population's (rows concatenated)."""
    out, h_n, c_n, d_gates_x, d_h0, d_c0, d_weight_hh = zip(*results, strict=True)
    by_rows = [torch.cat(out, 1), torch.cat(h_n), torch.cat(c_n), torch.cat(d_gates_x, 1)]
    return [*by_rows, torch.cat(d_h0), torch.cat(d_c0), torch.stack(d_weight_hh)]


def _relative_differences(actual: list[torch.Tensor], expected: list[torch.Tensor]) -> dict:
    return {
        name: ((a - e).abs().max() / e.abs().max()).item()
        for name, a, e in zip(NAMES, actual, expected, strict=True)
    }


def population_check(
    members: int = 10,
    steps: int = 784,
    batch: int = 100,
    hidden: int = 128,
    p_detach: float = 0.25,
    seed: int = 0,
) -> dict[str, float] | None:
    """Check and time a population against single calls; None (and a message) without CUDA.

    Returns the largest relative difference, the milliseconds per step of all members
    for each way and the speed-up over the best single-model backend.
    """
    if not torch.cuda.is_available():
        print("triton population check skipped: no CUDA device")
        return None
    from triton.testing import do_bench

    from hdetach.functional import lstm_recurrence
    from hdetach.ops.triton.loader import triton_backend

    def fused(*args):
        return lstm_recurrence(*args[:4], detach_mask=args[4], backend="fused")

    problem = _problem(members, steps, batch, hidden, p_detach, seed)
    triton_lstm_recurrence = triton_backend(torch.device("cuda")).triton_lstm_recurrence
    population = _population_step(problem, triton_lstm_recurrence)
    singles = {"triton": _single_steps(problem, triton_lstm_recurrence)}
    singles["fused"] = _single_steps(problem, fused)
    alone = _as_population([step() for step in singles["triton"]])
    differences = _relative_differences(population(), alone)
    del alone
    worst = max(differences.values())
    print(f"population of K={members}, T={steps}, B={batch}, H={hidden}, p={p_detach} "
          f"on {torch.cuda.get_device_name()}")  # fmt: skip
    print("relative difference to K single triton calls:",
          {name: f"{d:.1e}" for name, d in differences.items()})  # fmt: skip
    timings = {"population (triton)": do_bench(population, warmup=25, rep=300)}
    for backend, member_steps in singles.items():
        timings[f"{members} single calls ({backend})"] = do_bench(
            lambda member_steps=member_steps: [step() for step in member_steps],
            warmup=25,
            rep=300,
        )
    print("| run | ms per step of all members | member-steps/s |\n|---|---:|---:|")
    for name, ms in timings.items():
        print(f"| {name} | {ms:.1f} | {members * 1000 / ms:.1f} |")
    best_single = min(ms for name, ms in timings.items() if "single" in name)
    speedup = best_single / timings["population (triton)"]
    print(f"speed-up of the population over the best single-model backend: {speedup:.2f}x")
    print("check:", "ok" if worst < TOLERANCE else f"FAILED (> {TOLERANCE:.0e})")
    return {"max_relative_difference": worst, **timings, "speedup": speedup}


if __name__ == "__main__":
    result = population_check()
    sys.exit(1 if result is not None and result["max_relative_difference"] >= TOLERANCE else 0)

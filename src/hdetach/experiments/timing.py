"""Wall-clock timing for the benchmarks: one call, and several runs taking turns."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def timed_ms(fn: Callable[[], object], device: torch.device) -> float:
    """Wall time of one call of ``fn`` in ms."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1e3


def median_ms_in_turns(
    runs: dict[str, Callable[[], object]], rounds: int, device: torch.device
) -> dict[str, float]:
    """Median ms per call of each run, the runs taking turns, one call each per round
    after a warm-up round: a slow spell of a shared machine hits every run alike."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(rounds + 1):
        for name, fn in runs.items():
            ms = timed_ms(fn, device)
            if round_:
                times[name].append(ms)
    return {name: statistics.median(ms) for name, ms in times.items()}

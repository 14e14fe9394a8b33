"""Timing for the benchmarks: one call, and several runs taking turns.

The clock is wall time, or (``set_clock("cpu")``) the calling thread's CPU time: for
one thread on a loaded machine, where the waits for a core would swamp the work.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from hdetach.experiments.bench.clocks import CLOCKS

_clock = {"now": time.perf_counter}


def set_clock(name: str) -> None:
    """Time every later call with ``CLOCKS[name]``: ``wall`` (the default) or ``cpu``."""
    _clock["now"] = CLOCKS[name]


def timed_ms(fn: Callable[[], object], device: torch.device) -> float:
    """Time of one call of ``fn`` in ms, on the clock of ``set_clock``."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = _clock["now"]()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (_clock["now"]() - start) * 1e3


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

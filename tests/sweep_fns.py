"""Run functions for sweep tests, importable by the sweep's spawned worker processes."""

from pathlib import Path

from hdetach.experiments.sweep.engines import run_one


def fails_first_attempt(cfg, threads):
    """Raise on a run's first attempt (leaving a marker in its folder), then train it."""
    marker = Path(cfg.run_dir + ".attempted")
    if not marker.exists():
        marker.write_text("1")
        raise RuntimeError("a transient failure")
    return run_one(cfg, threads)

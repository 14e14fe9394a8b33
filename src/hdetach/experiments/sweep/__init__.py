"""Sweeps: a grid of ordinary runs (options x seeds) run locally or on Ray, resumable."""

from hdetach.experiments.sweep.cli import add_parser
from hdetach.experiments.sweep.grid import Grid
from hdetach.experiments.sweep.runner import SweepResult, run_sweep

__all__ = ["Grid", "SweepResult", "add_parser", "run_sweep"]

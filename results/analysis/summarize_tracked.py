"""Markdown table of the tracked runs: gradient balance along training and at the end.

Run from the repository root after tracked_runs.sh and `hdetach analyze` on the runs
(it reads each run's last.pt, which is not committed, for the final ||W_hh||):
    python results/analysis/summarize_tracked.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from hdetach.experiments.gradients.tracking import read_tracked

RUNS = Path("results/analysis/tracked")


def row(run_dir: Path) -> str:
    tracked = read_tracked(run_dir)
    steps = np.array([m["step"] for m in tracked])
    ratios = np.array([m["lstm"]["ratio"] for m in tracked])
    second_half = ratios[steps >= steps.max() / 2]
    summary = json.loads((run_dir / "summary.json").read_text())
    analysis_file = run_dir / "analysis" / "analysis.json"
    first = (
        json.loads(analysis_file.read_text())["first_ratio"] if analysis_file.is_file() else None
    )
    weights = torch.load(run_dir / "last.pt", weights_only=True)["model"]
    w_hh = float(weights["lstm.weight_hh_l0"].norm())
    return (
        f"| {run_dir.name} | {summary['best_val']:.3f} | {ratios[0]:.3g} | "
        f"{np.median(second_half):.3g} | {ratios.max():.3g} | {ratios[-1]:.3g} | "
        + (f"{first:.3g} |" if first is not None else "- |")
        + f" {w_hh:.0f} |"
    )


def main() -> None:
    print(
        "| run | best val acc | ratio at step 0 | median ratio, 2nd half | max ratio | "
        "final ratio | h/cell on x_1..x_10 (best.pt) | W_hh Frobenius norm (last.pt) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for run_dir in sorted(RUNS.iterdir()):
        if (run_dir / "summary.json").is_file():
            print(row(run_dir))


if __name__ == "__main__":
    main()

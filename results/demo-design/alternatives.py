"""What other headlines would have said on the same reruns (post hoc: these are not the
demo's verdicts, and a headline chosen here must be confirmed on fresh seed sets).
Per rerun (keep_runs.sh's copies of its run folders): the demo's headline test (each
seed's transfer accuracy averaged over T, Mann-Whitney U, as printed), the same values
paired by seed (the two models of a seed share data and initial weights: Wilcoxon
signed-rank), and how many seeds of each model never left chance at the training T.
Usage: python results/demo-design/alternatives.py results/demo-design/CANDIDATE"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy import stats

from hdetach.experiments.run.folder import RunFolder

STUCK = 0.15  # best validation accuracy below this: the run never left chance (0.125)


def per_seed(rerun: Path) -> dict[float, dict[int, tuple[float, float]]]:
    """p_detach -> seed -> (best val acc at the training T, transfer accuracy averaged over T)."""
    found: dict[float, dict[int, tuple[float, float]]] = {}
    for run in map(RunFolder, rerun.iterdir()):
        config = run.read_config()
        best = run.read_summary()["best_val"]
        acc = run.read_transfer()["acc"]
        found.setdefault(config["p_detach"], {})[config["seed"]] = (best, float(np.mean(acc)))
    return found


def main(folder: Path) -> None:
    print(
        "| rerun | seeds | MW p (headline) | paired Wilcoxon p | h-detach stuck | vanilla stuck |"
    )
    print("|---|---|---|---|---|---|")
    for rerun in sorted(
        (folder / "runs").iterdir(), key=lambda p: (p.name[:5], int(p.name.split("-")[-1]))
    ):
        groups = per_seed(rerun)
        vanilla, hdetach = groups[0.0], groups[max(groups)]
        seeds = sorted(vanilla)
        v = np.array([vanilla[s][1] for s in seeds])
        h = np.array([hdetach[s][1] for s in seeds])
        mw = stats.mannwhitneyu(h, v, alternative="two-sided").pvalue
        paired = stats.wilcoxon(h - v, alternative="two-sided").pvalue
        stuck = [sum(g[s][0] < STUCK for s in seeds) for g in (hdetach, vanilla)]
        n = len(seeds)
        print(
            f"| {rerun.name} | {seeds[0]}-{seeds[-1]} | {_said(mw, np.mean(h - v))} | "
            f"{_said(paired, np.median(h - v))} | {stuck[0]} of {n} | {stuck[1]} of {n} |"
        )


def _said(p: float, difference: float) -> str:
    return f"{p:.2g} ({'h-detach' if difference > 0 else 'vanilla'} ahead)"


if __name__ == "__main__":
    main(Path(sys.argv[1]))

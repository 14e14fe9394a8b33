"""PNG plots of the weight-scale study, of a trained run's gradient profiles, and of the
gradient balance tracked along training."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

from hdetach.analysis.profiles import PATHS
from hdetach.experiments.gradients.tracking import ratio_series
from hdetach.experiments.report.plotting import subplots, title_with_band

COLORS = {"full": "black", "cell": "tab:blue", "hidden": "tab:red"}


def _seed_values(per_seed: dict[str, list[dict]], get) -> tuple[list[float], list[list[float]]]:
    """Scales and, per scale, the defined per-seed values of ``get(numbers)``."""
    scales = sorted(per_seed, key=float)
    values = [[v for v in map(get, per_seed[s]) if v is not None and v > 0] for s in scales]
    return [float(s) for s in scales], values


def _median_and_points(ax, scales, values, label: str, color=None) -> None:
    """Each seed as a dot, the median across seeds as a line."""
    medians = [float(np.median(v)) if v else np.nan for v in values]
    (line,) = ax.plot(scales, medians, marker="o", label=label, color=color)
    for s, v in zip(scales, values):
        ax.scatter([s] * len(v), v, s=8, alpha=0.4, color=line.get_color())


def _positive(values: list[float]) -> np.ndarray:
    """Zeros (a path that does not reach a step) left out of a log-scale line."""
    a = np.asarray(values, dtype=float)
    return np.where(a > 0, a, np.nan)


def _finish(fig, ax, out: Path, xlabel: str, ylabel: str, title: str) -> Path:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    return out


def plot_study(result: dict, out_dir: Path) -> dict[str, Path]:
    """ratio.png, first_steps.png and profiles.png from ``StudyResult.to_json()``."""
    settings = result["settings"]
    what = f"{settings['task']} T={settings['T']}, H={settings['hidden_size']}, at init"
    return {
        "ratio": _plot_ratio(result["per_seed"], out_dir / "ratio.png", what),
        "first_steps": _plot_first_steps(
            result["per_seed"], settings["first"], out_dir / "first_steps.png", what
        ),
        "profiles": _plot_profiles(
            result["mean_input_gradient_profile"], out_dir / "profiles.png", what
        ),
    }


def _plot_ratio(per_seed: dict, out: Path, what: str) -> Path:
    fig, ax = subplots(figsize=(6.4, 4.2))
    for group in ("lstm", "W_hh", "W_ih"):
        scales, values = _seed_values(per_seed, lambda r, g=group: r["ratio"][g])
        _median_and_points(ax, scales, values, f"{group} weights")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.axhline(1, color="gray", lw=1, ls="--")
    _finish(
        fig,
        ax,
        out,
        "scale s of W_hh",
        "||h-path|| / ||cell-path||",
        f"gradient balance vs recurrent weight scale\n({what}; dots: seeds, line: median)",
    )
    return out


def _plot_first_steps(per_seed: dict, k: int, out: Path, what: str) -> Path:
    fig, (ax, ax_ratio) = subplots(1, 2, figsize=(10, 4.0))
    for path in PATHS:
        scales, values = _seed_values(per_seed, lambda r, p=path: r["share_first"][p])
        _median_and_points(ax, scales, values, f"{path} path", COLORS[path])
    scales, values = _seed_values(per_seed, lambda r: r["first_ratio"])
    _median_and_points(ax_ratio, scales, values, "h path / cell path", "tab:green")
    ax_ratio.axhline(1, color="gray", lw=1, ls="--")
    for a in (ax, ax_ratio):
        a.set_xscale("log", base=2)
        a.set_yscale("log")
    ax_ratio.set_title(f"||dL_end/dx_1..{k}||: h path / cell path", fontsize=10)
    ax_ratio.set_xlabel("scale s of W_hh")
    ax_ratio.grid(alpha=0.3, which="both")
    _finish(
        fig,
        ax,
        out,
        "scale s of W_hh",
        f"share of ||dL_end/dx||^2 on x_1..x_{k}",
        f"end-loss gradient reaching the first {k} inputs ({what})",
    )
    return out


def _plot_profiles(profiles: dict, out: Path, what: str) -> Path:
    fig, axes = subplots(1, 2, figsize=(10, 4.0), sharey=True)
    cmap = matplotlib.colormaps["viridis"]
    for ax, path in zip(axes, ("full", "cell")):
        for i, scale in enumerate(sorted(profiles, key=float)):
            norms = _positive(profiles[scale][path])
            ax.plot(
                np.arange(1, len(norms) + 1),
                norms,
                color=cmap(i / max(len(profiles) - 1, 1)),
                label=f"s={float(scale):g}",
            )
        ax.set_yscale("log")
        ax.set_title(f"{path} gradient", fontsize=10)
        ax.set_xlabel("input step t")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean over seeds of ||dL_end/dx_t||")
    axes[1].legend(fontsize=8)
    fig.suptitle(f"input-gradient profile by path ({what})", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    return out


def plot_run_profiles(profiles: dict[str, dict[str, list[float]]], out: Path, title: str) -> Path:
    """A trained run: ||dL/dx_t||, ||dL/dh_t||, ||dL/dc_t|| against t, one line per path."""
    quantities = list(profiles["full"])
    fig, axes = subplots(1, len(quantities), figsize=(4.2 * len(quantities), 3.8))
    for ax, q in zip(np.atleast_1d(axes), quantities):
        for path in PATHS:
            norms = _positive(profiles[path][q])
            ax.plot(np.arange(1, len(norms) + 1), norms, color=COLORS[path], label=path)
        ax.set_yscale("log")
        ax.set_xlabel("step t")
        ax.set_title(f"||dL/d{q}_t||", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    return out


def plot_gradient_balance(
    groups: dict[str, list[Path]], out: Path, group: str = "lstm"
) -> Path | None:
    """||h-path|| / ||cell-path|| against training steps: per configuration the geometric
    mean over its seeds (the ratio spans decades) and a min-max band. None if no run
    tracked its gradients."""

    series = {
        label: [s for s in (ratio_series(d, group) for d in run_dirs) if s[0]]
        for label, run_dirs in groups.items()
    }
    series = {label: runs for label, runs in series.items() if runs}
    if not series:
        return None
    fig, ax = subplots(figsize=(6.4, 4.0))
    banded = False
    for label, runs in series.items():
        n = min(len(steps) for steps, _ in runs)  # unfinished runs: the common prefix
        steps = runs[0][0][:n]
        logs = np.log10([ratios[:n] for _, ratios in runs])
        (line,) = ax.plot(steps, 10 ** logs.mean(0), label=f"{label} (n={len(runs)})")
        if len(runs) > 1:
            band = (10 ** logs.min(0), 10 ** logs.max(0))
            ax.fill_between(steps, *band, color=line.get_color(), alpha=0.2)
            banded = True
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel(f"||h-path|| / ||cell-path||  ({group} weights)")
    note = "line: geometric mean over the n seeds; band: their min to max"
    title_with_band(ax, "gradient balance along training (fixed validation batch)", banded, note)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    return out

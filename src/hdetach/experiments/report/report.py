"""Plots and a Markdown table from run directories, grouped into configurations.

Runs that differ only in their seed form one configuration; curves show the mean
across seeds with a min-max band.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hdetach.experiments.gradients.plots import plot_gradient_balance
from hdetach.experiments.report.plotting import chance_line, subplots, title_with_band
from hdetach.experiments.report.runs import (
    Baseline,
    RunRecord,
    find_runs,
    group_runs,
    up_to_epoch,
)
from hdetach.experiments.report.stability import plot_runs, stability_section
from hdetach.experiments.report.study import VANILLA, one_run_per_seed, study_section
from hdetach.experiments.report.tables import (
    at_epochs_table,
    markdown_table,
    metric_of,
    reach_table,
)
from hdetach.experiments.tasks.definitions import Copying
from hdetach.experiments.tasks.registry import TASKS, metric_direction


def _band(series: list[list[float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = min(len(s) for s in series)  # unfinished runs: plot the common prefix
    a = np.array([s[:n] for s in series])
    return a.mean(0), a.min(0), a.max(0)


def plot_curves(
    groups: dict[str, list[RunRecord]], out: Path, references: dict[str, float] | None = None
) -> Path:
    """Validation metric against epoch, mean across seeds with a min-max band, and a dotted
    line at each of ``references`` (label -> value: e.g. the paper's number)."""
    fig, ax = subplots(figsize=(6.4, 4.0))
    banded = False
    for label, runs in groups.items():
        runs = [r for r in runs if r.records and not r.diverged]
        if not runs:
            continue
        epochs = _band([[rec["epoch"] for rec in r.records] for r in runs])[0]
        mean, lo, hi = _band([[rec["val"][r.metric] for rec in r.records] for r in runs])
        marker = "o" if len(epochs) <= 40 else None  # a few evaluations: show each
        (line,) = ax.plot(epochs, mean, marker=marker, ms=3, label=f"{label} (n={len(runs)})")
        if len(runs) > 1:
            ax.fill_between(epochs, lo, hi, color=line.get_color(), alpha=0.2)
            banded = True
    runs = [r for rs in groups.values() for r in rs]
    chance_line(ax, chance_of(runs))
    title_with_band(ax, curves_title(runs), banded)
    for k, (label, value) in enumerate((references or {}).items()):
        ax.axhline(value, color=f"C{len(groups) + k}", ls=":", lw=1.2, label=f"{label} ({value:g})")
    metric = metric_of(runs)
    ax.set_xlabel(epoch_label(runs))
    ax.set_ylabel(f"validation {metric}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    return out


def chance_of(runs: list[RunRecord]) -> float | None:
    """The metric of a uniform guess, where every run's task has the same one."""
    chances = {TASKS[t].chance if t in TASKS else None for t in {r.config["task"] for r in runs}}
    return chances.pop() if len(chances) == 1 else None


def epoch_label(runs: list[RunRecord]) -> str:
    """ "epoch", with its length in training steps where every run has the same (a copying
    "epoch" is a count of minibatches, not a pass over data)."""
    lengths = {r.config.get("steps_per_epoch") for r in runs}
    if len(lengths) == 1 and None not in lengths:
        return f"epoch ({lengths.pop():,} training steps)"
    return "epoch"


def curves_title(runs: list[RunRecord]) -> str:
    """What the runs of a figure are, in words: the tasks (copying and adding with their
    T), and "no gradient clipping" where none of them clipped."""
    tasks = sorted({r.config["task"] for r in runs})
    parts = []
    for task in tasks:
        known = TASKS.get(task)  # a run of another version may name a task no longer known
        name = known.label if known else task
        Ts = sorted({r.config.get("T") for r in runs if r.config["task"] == task} - {None})
        if known and known.takes_T and Ts:
            name += f", T={', '.join(map(str, Ts))}"
        parts.append(name)
    if runs and all(r.config.get("clip") == "none" for r in runs):
        parts.append("no gradient clipping")
    return "; ".join(parts)


def _from_training_length(runs: list[RunRecord]) -> tuple[list[int], list[list[float]]]:
    """The lengths and each run's accuracies at them: the transfer results, preceded by
    the training length's own test accuracy (at the best validation) where the runs share
    a training length below every tested one and each has that accuracy, so that a line
    starts where its models were trained."""
    Ts = runs[0].transfer["T"]
    accuracies = [r.transfer["acc"] for r in runs]
    trained = {r.config.get("T") for r in runs}
    at_training = [((r.summary or {}).get("test_at_best") or {}).get("acc") for r in runs]
    if len(trained) != 1 or None in trained or None in at_training:
        return Ts, accuracies
    (length,) = trained
    if length >= min(Ts):
        return Ts, accuracies
    return [length, *Ts], [[first, *rest] for first, rest in zip(at_training, accuracies)]


def plot_transfer(groups: dict[str, list[RunRecord]], out: Path) -> Path:
    """Transfer-copying accuracy against T, mean across seeds with a min-max band, from the
    training length (its test accuracy at the best validation) on."""
    fig, ax = subplots(figsize=(6.4, 4.0))
    banded, tested, trained = False, set(), set()
    for label, runs in groups.items():
        runs = [r for r in runs if r.transfer]
        if not runs:
            continue
        runs = [r for r in runs if r.transfer["T"] == runs[0].transfer["T"]]
        Ts, accuracies = _from_training_length(runs)
        mean, lo, hi = _band(accuracies)
        (line,) = ax.plot(Ts, mean, marker="o", label=f"{label} (n={len(runs)})")
        if len(runs) > 1:
            ax.fill_between(Ts, lo, hi, color=line.get_color(), alpha=0.2)
            banded = True
        tested.update(Ts)
        trained.update(r.config["T"] for r in runs)
    chance_line(ax, Copying.chance)
    for T in sorted(trained & tested):
        ax.axvline(T, color="gray", ls=":", lw=1, label=f"training length T={T}")
    ax.set_xscale("log")
    ticks = sorted(tested)  # the tested T themselves, not the log scale's 2x10^1 ...
    ax.set_xticks(ticks, [str(T) for T in ticks])
    ax.minorticks_off()
    trained_at = ", ".join(map(str, sorted(trained)))
    title_with_band(ax, f"copying task trained at T={trained_at}: accuracy at longer gaps", banded)
    ax.set_xlabel("T (copy gap at test time)")
    ax.set_ylabel("accuracy on the copied symbols")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    return out


def _evaluated_runs(
    paths: list[str | Path], until_epoch: float | None
) -> tuple[list[RunRecord], list[RunRecord]]:
    """The runs under ``paths`` (read as they stood at ``until_epoch``, if given): those
    evaluated at least once, and those not yet."""
    runs = find_runs(paths)
    if until_epoch is not None:
        runs = [up_to_epoch(r, until_epoch) for r in runs]
    # A run that has just started (no evaluation, no outcome) is not yet a seed of its
    # configuration: counted, it would stand in the tables as a seed with no result.
    waiting = [r for r in runs if not (r.records or r.summary)]
    runs = [r for r in runs if r.records or r.summary]
    if not runs:  # only where --until-epoch comes before every run's first evaluation
        raise ValueError(f"--until-epoch {until_epoch:g}: no run had been evaluated by then")
    return runs, waiting


def report(
    paths: list[str | Path],
    out_dir: str | Path,
    threshold: float | None = None,
    direction: str | None = None,
    baseline: Baseline | None = None,
    references: dict[str, float] | None = None,
    at_epochs: list[float] | None = None,
    reach: list[float] | None = None,
    stability: tuple[float, float] | None = None,
    until_epoch: float | None = None,
) -> dict[str, Path]:
    """Write curves.png, transfer.png (if any run has transfer results), gradients.png (if
    any run tracked its gradients), runs.png (with ``stability``) and report.md; with several
    seeds per configuration (or a ``threshold``) also the study statistics (and success.png
    over lr x p).
    ``direction``: "higher" or "lower" is better (default: as the task of the runs' metric
    says); ``baseline``: (option, value) of the configurations each other is compared with
    (default: p_detach 0); ``references``: label -> value, lines on the curves;
    ``at_epochs``: a table of the validation metric at those epochs; ``reach``: a table
    of how many seeds reached each of these values, and in how many epochs;
    ``stability``: (spike, dip), a section counting the runs that diverged, whose training
    loss rose more than spike above its lowest, or whose validation metric fell more than
    dip below its best (``stability``); ``until_epoch``: every run read as it
    stood at that epoch (``runs.up_to_epoch``)."""

    runs, waiting = _evaluated_runs(paths, until_epoch)
    groups = one_run_per_seed(group_runs(runs))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"curves": plot_curves(groups, out_dir / "curves.png", references)}
    if any(r.transfer for r in runs):
        written["transfer"] = plot_transfer(groups, out_dir / "transfer.png")
    run_dirs = {label: [r.path for r in rs] for label, rs in groups.items()}
    if balance := plot_gradient_balance(run_dirs, out_dir / "gradients.png"):
        written["gradients"] = balance
    text = markdown_table(groups)
    if at_epochs:
        text += "\n" + at_epochs_table(groups, at_epochs)
    metric = metric_of(runs)
    study = threshold is not None or any(len(g) > 1 for g in groups.values())
    if reach or study or stability:  # these need the direction (unknown metric: an error)
        higher = metric_direction(metric) if direction is None else direction == "higher"
    if reach:
        text += "\n" + reach_table(groups, reach, higher)
    if stability:
        text += "\n" + stability_section(groups, metric, higher, *stability, baseline or VANILLA)
        title, chance, xlabel = curves_title(runs), chance_of(runs), epoch_label(runs)
        written["runs"] = plot_runs(groups, out_dir / "runs.png", metric, title, chance, xlabel)
    if study:
        section, files = study_section(
            groups, metric, threshold, higher, out_dir, baseline or VANILLA
        )
        text += "\n" + section
        written.update(files)
    if waiting:
        names = ", ".join(r.path.name for r in waiting)
        text += f"\nNot evaluated yet, so left out: {len(waiting)} run(s) ({names}).\n"
    md = out_dir / "report.md"
    md.write_text(text)
    written["table"] = md
    return written

"""How stable each run's training was: the measures of the paper's claim that without
gradient clipping the vanilla LSTM is unstable while h-detach is not (``report
--stability``).

Per run, from its evaluation records (one per ``--eval-every`` steps, by default one per
epoch) and its summary:

* diverged: a non-finite loss or gradient stopped it;
* loss spike: the largest rise of an interval's mean training loss above the lowest
  interval mean before it, in the loss's units (above ``spike``, e.g. 0.5 nats; a rise,
  not a ratio, so that the noise of a loss near 0 does not count);
* validation dip: the largest fall of the validation metric below its best so far, in
  the metric's units and toward worse (above ``dip``, e.g. 0.05: five points of accuracy).

Configurations are compared with their baseline (p = 0) by the count of runs with any of
the three, in Fisher's exact test. A figure (``runs.png``) draws every run on its own,
since a mean over seeds hides a collapse that one seed has.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from scipy.stats import fisher_exact

from hdetach.experiments.report.plotting import chance_line, subplots
from hdetach.experiments.report.runs import Baseline, RunRecord
from hdetach.experiments.report.study import VANILLA, baselines
from hdetach.experiments.report.tables import median_range


@dataclass
class Instability:
    """One run's measures (None where its records cannot say: fewer than two)."""

    diverged: bool
    spike: float | None  # largest rise of the loss above its lowest earlier value, >= 0
    dip: float | None  # largest fall below the best earlier validation value, >= 0

    def unstable(self, spike: float, dip: float) -> bool:
        return (
            self.diverged
            or (self.spike is not None and self.spike > spike)
            or (self.dip is not None and self.dip > dip)
        )


def instability(run: RunRecord, metric: str, higher: bool) -> Instability:
    """The measures of one run (``higher``: whether a larger ``metric`` is better)."""
    losses = [r.get("train", {}).get("loss") for r in run.records]
    values = [r["val"].get(metric) for r in run.records]
    spikes, dips = [], []
    for i in range(1, len(run.records)):
        earlier_loss = [v for v in losses[:i] if v is not None]
        if losses[i] is not None and earlier_loss:
            spikes.append(max(0.0, losses[i] - min(earlier_loss)))
        earlier = [v for v in values[:i] if v is not None]
        if values[i] is not None and earlier:
            best = max(earlier) if higher else min(earlier)
            dips.append(max(0.0, best - values[i] if higher else values[i] - best))
    return Instability(run.diverged, max(spikes) if spikes else None, max(dips) if dips else None)


def stability_section(
    groups: dict[str, list[RunRecord]],
    metric: str,
    higher: bool,
    spike: float,
    dip: float,
    baseline: Baseline = VANILLA,
) -> str:
    """Markdown: per configuration the runs that diverged, spiked or dipped, and the
    comparison of the unstable counts with the baseline's."""
    measures = {
        label: [instability(r, metric, higher) for r in runs] for label, runs in groups.items()
    }
    rows = [
        f"| configuration | runs | diverged | loss spike > {spike:g} | val {metric} dip > "
        f"{dip:g} | any of these | largest loss rise | largest dip |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, ms in measures.items():
        spikes = [m.spike for m in ms if m.spike is not None]
        dips = [m.dip for m in ms if m.dip is not None]
        rows.append(
            f"| {label} | {len(ms)} | {sum(m.diverged for m in ms)} | "
            f"{sum(s > spike for s in spikes)} | {sum(d > dip for d in dips)} | "
            f"{sum(m.unstable(spike, dip) for m in ms)} | "
            f"{median_range(spikes, '.3g')} | {median_range(dips, '.3g')} |"
        )
    lines = [
        "## Stability",
        "",
        f"Per run, over its evaluations: a loss spike is an interval's mean training loss "
        f"more than {spike:g} above the lowest interval mean before it; a dip is the validation "
        f"{metric} falling more than {dip:g} below its best before it. The last two columns "
        "give each measure's largest value in a run, median [min, max] over the runs.",
        "",
        *rows,
        "",
    ]
    for label, base in baselines(groups, baseline).items():
        a, b = measures[label], measures[base]
        bad_a = sum(m.unstable(spike, dip) for m in a)
        bad_b = sum(m.unstable(spike, dip) for m in b)
        _, p = fisher_exact([[bad_a, len(a) - bad_a], [bad_b, len(b) - bad_b]])
        lines.append(
            f"- {label}: {bad_a} of {len(a)} runs unstable, against {bad_b} of {len(b)} for "
            f"{base} (Fisher's exact test, two-sided: p = {p:.2g})."
        )
    return "\n".join(lines) + "\n"


def plot_runs(
    groups: dict[str, list[RunRecord]],
    out: Path,
    metric: str,
    title: str,
    chance: float | None = None,
    xlabel: str = "epoch",
) -> Path:
    """Every run on its own: one column per configuration, the validation ``metric`` by
    evaluation on top and, where the runs logged it, the interval mean training loss
    below; a seed keeps its colour across columns, and a diverged run ends in a cross."""
    with_loss = any(
        r.get("train", {}).get("loss") is not None
        for rs in groups.values()
        for run in rs
        for r in run.records
    )
    rows = 2 if with_loss else 1
    fig, axes = subplots(
        rows,
        len(groups),
        figsize=(3.6 * len(groups) + 0.8, 2.6 * rows + 0.6),
        sharex=True,
        sharey="row",
        squeeze=False,
    )
    seeds = sorted({r.config["seed"] for rs in groups.values() for r in rs})
    for column, (label, runs) in enumerate(groups.items()):
        top = axes[0][column]
        top.set_title(label, fontsize=10)
        for run in sorted(runs, key=lambda r: r.config["seed"]):
            seed = run.config["seed"]
            style = {"color": f"C{seeds.index(seed)}", "lw": 1.2}
            name = f"seed {seed}" + (" (diverged)" if run.diverged else "")
            epochs = [r["epoch"] for r in run.records]
            values = [r["val"].get(metric) for r in run.records]
            top.plot(epochs, values, label=name, **style)
            if run.diverged and epochs:
                top.plot(epochs[-1:], values[-1:], marker="x", ms=8, ls="", **style)
            if with_loss:
                losses = [r.get("train", {}).get("loss") for r in run.records]
                axes[1][column].plot(epochs, losses, **style)
        chance_line(top, chance)
        top.legend(fontsize=8)
        for ax in (row[column] for row in axes):
            ax.grid(alpha=0.3)
        axes[-1][column].set_xlabel(xlabel)
    axes[0][0].set_ylabel(f"validation {metric}")
    if with_loss:
        axes[1][0].set_ylabel("training loss\n(interval mean)")
    fig.suptitle(f"{title}: every run", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    return out

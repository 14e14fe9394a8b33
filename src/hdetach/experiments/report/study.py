"""The study section of ``hdetach report``: per-configuration statistics over distinct
seeds, comparisons against a baseline (by default vanilla, all else equal) at the
run's own T and in transfer, and the learning-rate x p success table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from hdetach.experiments.report.plotting import subplots
from hdetach.experiments.report.runs import (
    NOT_CONFIG,
    Baseline,
    transfer_accuracies,
    transfer_lengths,
    varying_options,
)
from hdetach.experiments.report.stats import (
    CONFIDENCE,
    GroupStats,
    Spread,
    compare,
    distinct_seeds,
    group_stats,
)


def _setting(config: dict[str, Any], without: tuple[str, ...] = ()) -> str:
    """The options that make ``config`` a configuration (as report groups runs)."""
    return json.dumps({k: v for k, v in config.items() if k not in NOT_CONFIG | set(without)})


# What each configuration is compared with by default: nothing detached, all else equal.
VANILLA: Baseline = ("p_detach", 0)


def baselines(groups: dict[str, list], baseline: Baseline = VANILLA) -> dict[str, str]:
    """Label -> the label of its baseline: the group whose option ``baseline[0]`` has the
    value ``baseline[1]`` and that is equal in all else."""
    key, value = baseline
    anchors = {
        _setting(runs[0].config, (key,)): label
        for label, runs in groups.items()
        if runs[0].config.get(key) == value
    }
    found = {}
    for label, runs in groups.items():
        base = anchors.get(_setting(runs[0].config, (key,)))
        if base is not None and base != label:
            found[label] = base
    return found


def _cell(s: Spread | None) -> str:
    if s is None:
        return "-"
    return f"{s.mean:.4f} ± {s.std:.4f}"


def _range(s: Spread | None) -> str:
    return "-" if s is None else f"{s.median:.4f} [{s.min:.4f}, {s.max:.4f}]"


def _success(g: GroupStats) -> str:
    return "-" if g.successes is None else f"{g.success_rate:.0%} ({g.successes}/{g.seeds})"


def _steps(g: GroupStats) -> str:
    if not g.steps_to_threshold:
        return "-"
    return f"{np.median(g.steps_to_threshold):g} (n={len(g.steps_to_threshold)})"


def one_run_per_seed(groups: dict[str, list]) -> dict[str, list]:
    """The groups with each seed counted once (repeats warned about)."""
    return {label: distinct_seeds(label, runs) for label, runs in groups.items()}


def study_markdown(
    groups: dict[str, list],
    per_group: dict[str, GroupStats],
    metric: str,
    threshold: float | None,
    higher: bool,
    baseline: Baseline = VANILLA,
) -> str:
    """The study tables in Markdown, with the comparisons said in words. ``groups``: one
    run per seed; ``per_group``: their ``group_stats``."""
    reach = f"{'≥' if higher else '≤'} {threshold:g}" if threshold is not None else ""
    lines = [
        f"## Study: {metric} over distinct seeds (mean ± sample std; median [min, max])",
        "",
        f"| configuration | seeds | diverged | best val | best val median [min, max] | "
        f"final val | success {reach} | steps to {reach or 'threshold'} (median) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, g in per_group.items():
        best = Spread.of(g.best)
        lines.append(
            f"| {label} | {g.seeds} | {g.diverged} | {_cell(best)} | {_range(best)} | "
            f"{_cell(Spread.of(g.final))} | {_success(g)} | {_steps(g)} |"
        )
    lines += ["", *_comparisons(groups, per_group, metric, higher, baseline)]
    lines += transfer_comparisons(groups, baseline)
    table = lr_p_table(groups, per_group)
    if table:
        lines += ["", f"Success rate ({metric} {reach}) by learning rate and p:", "", table]
    return "\n".join(lines) + "\n"


def _comparisons(groups, per_group, metric: str, higher: bool, baseline: Baseline) -> list[str]:
    """Each configuration against its baseline: by the best validation value, and by the
    test value at the best validation where the runs have finished."""
    pairs = baselines(groups, baseline)
    said = f"{baseline[0]} = {baseline[1]}"
    if not pairs:
        return [f"No comparisons: no {said} group equal in all other options."]
    best = {label: g.best for label, g in per_group.items()}
    lines = _comparison_table(pairs, best, f"best val {metric}", higher, said)
    if any(g.test for g in per_group.values()):
        test = {label: g.test for label, g in per_group.items()}
        lines += ["", *_comparison_table(pairs, test, f"test {metric} at best val", higher, said)]
    return lines


def _comparison_table(
    pairs: dict[str, str], values: dict[str, list[float]], what: str, higher: bool, said: str
) -> list[str]:
    """The table and the sentences comparing ``values`` (per label) with the baseline's."""
    lines = [
        f"Against the baseline ({said}, all else equal): difference of the mean {what}, "
        f"{CONFIDENCE:.0%} bootstrap CI (percentile), Mann-Whitney U p (two-sided); "
        "runs that did not diverge.",
        "",
        "| configuration | baseline | difference | 95% CI | p | verdict |",
        "|---|---|---|---|---|---|",
    ]
    words = []
    for label, base in pairs.items():
        c = compare(values[label], values[base])
        if c is None:
            lines.append(f"| {label} | {base} | - | - | - | fewer than 2 finished seeds |")
            continue
        verdict = c.verdict(higher)
        lines.append(
            f"| {label} | {base} | {c.diff:+.4f} | [{c.low:+.4f}, {c.high:+.4f}] | "
            f"{c.p:.3g} | {verdict} |"
        )
        if c.within_noise:
            words.append(
                f"- {label} vs {base}, {what}: the difference ({c.diff:+.4f}) is within "
                f"noise ({c.n_a} vs {c.n_b} seeds): no claim either way."
            )
        else:
            words.append(
                f"- {label} is {verdict} than {base} by {abs(c.diff):.4f} in {what} "
                f"({c.n_a} vs {c.n_b} seeds, CI excludes 0, p = {c.p:.2g})."
            )
    return lines + ["", *words]


def transfer_comparisons(groups: dict[str, list], baseline: Baseline = VANILLA) -> list[str]:
    """Each group's transfer accuracy against its baseline's at every T (of the runs
    evaluated at the report's lengths, ``transfer_lengths``) both have results for,
    compared as the best val metric is; no lines when no pair has transfer results.
    ``groups``: one run per seed."""
    table, said = [], []
    lengths = transfer_lengths(groups) or []
    for label, base in baselines(groups, baseline).items():
        pairs = zip(
            transfer_accuracies(groups[label], lengths), transfer_accuracies(groups[base], lengths)
        )
        found = {
            T: compare(ours, theirs) for T, (ours, theirs) in zip(lengths, pairs) if ours and theirs
        }
        Ts = list(found)
        for T, c in found.items():
            if c is None:
                table.append(f"| {label} | {base} | {T} | - | - | - | fewer than 2 seeds |")
            else:
                table.append(
                    f"| {label} | {base} | {T} | {c.diff:+.4f} | [{c.low:+.4f}, {c.high:+.4f}] "
                    f"| {c.p:.3g} | {c.verdict(higher_is_better=True)} |"
                )
        clear = [
            f"{'better' if c.diff > 0 else 'worse'} at T={T} ({c.diff:+.3f}, p = {c.p:.2g})"
            for T, c in found.items()
            if c is not None and not c.within_noise
        ]
        if Ts:
            said.append(
                f"- transfer, {label} vs {base}: "
                + ("; ".join(clear) if clear else f"within noise at every T ({Ts[0]} to {Ts[-1]})")
                + "; each T judged on its own."
            )
    if not table:
        return []
    return [
        "",
        "Transfer (each run's best model at longer T) against the baseline: difference of "
        f"the mean accuracy, {CONFIDENCE:.0%} bootstrap CI, Mann-Whitney U p.",
        "",
        "| configuration | baseline | T | difference | 95% CI | p | verdict |",
        "|---|---|---|---|---|---|---|",
        *table,
        "",
        *said,
    ]


def _grid(groups: dict[str, list]) -> tuple[list, list] | None:
    """The lr and p values when the groups differ in lr and p_detach and nothing else."""
    configs = [runs[0].config for runs in groups.values()]
    if set(varying_options(configs)) != {"lr", "p_detach"}:
        return None
    return sorted({c["lr"] for c in configs}), sorted({c["p_detach"] for c in configs})


def _rates(groups, per_group) -> tuple[list, list, np.ndarray] | None:
    grid = _grid(groups)
    if grid is None or next(iter(per_group.values())).successes is None:
        return None
    lrs, ps = grid
    rates = np.full((len(lrs), len(ps)), np.nan)
    for label, runs in groups.items():
        c = runs[0].config
        rates[lrs.index(c["lr"]), ps.index(c["p_detach"])] = per_group[label].success_rate
    return lrs, ps, rates


def lr_p_table(groups: dict[str, list], per_group: dict[str, GroupStats]) -> str | None:
    """Markdown success rates, rows lr, columns p (None unless the groups span just those)."""
    found = _rates(groups, per_group)
    if found is None:
        return None
    lrs, ps, rates = found
    rows = ["| lr \\ p | " + " | ".join(f"{p:g}" for p in ps) + " |", "|---|" + "---|" * len(ps)]
    for lr, row in zip(lrs, rates):
        cells = ["-" if np.isnan(r) else f"{r:.0%}" for r in row]
        rows.append(f"| {lr:g} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def plot_success_heatmap(
    groups: dict[str, list], per_group: dict[str, GroupStats], out: Path
) -> Path | None:
    """A heat map of the success rate over lr x p (None unless the groups span just those)."""

    found = _rates(groups, per_group)
    if found is None:
        return None
    lrs, ps, rates = found
    fig, ax = subplots(figsize=(1.2 * len(ps) + 2.5, 0.6 * len(lrs) + 1.8))
    image = ax.imshow(rates, vmin=0, vmax=1, cmap="viridis", origin="lower", aspect="auto")
    for (i, j), r in np.ndenumerate(rates):
        if not np.isnan(r):
            ax.text(j, i, f"{r:.0%}", ha="center", va="center", color="w" if r < 0.6 else "k")
    ax.set_xticks(range(len(ps)), [f"{p:g}" for p in ps])
    ax.set_yticks(range(len(lrs)), [f"{lr:g}" for lr in lrs])
    ax.set_xlabel("p_detach")
    ax.set_ylabel("learning rate")
    fig.colorbar(image, label="success rate")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    return out


def study_section(
    groups: dict[str, list],
    metric: str,
    threshold: float | None,
    higher: bool,
    out_dir: Path,
    baseline: Baseline = VANILLA,
) -> tuple[str, dict[str, Path]]:
    """The study's Markdown and the files it wrote (the lr x p heat map, when it applies).
    ``groups``: one run per seed; ``baseline``: (option, value) of the configurations the
    others are compared with."""
    per_group = {label: group_stats(runs, threshold, higher) for label, runs in groups.items()}
    text = study_markdown(groups, per_group, metric, threshold, higher, baseline)
    heatmap = plot_success_heatmap(groups, per_group, out_dir / "success.png")
    return text, {"success": heatmap} if heatmap else {}

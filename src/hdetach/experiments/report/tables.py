"""The report's Markdown tables over configurations: best, final and test values (and
transfer), the metric at fixed epochs, and the epochs to reach given values."""

from __future__ import annotations

import numpy as np

from hdetach.experiments.report.runs import RunRecord, transfer_accuracies, transfer_lengths
from hdetach.experiments.report.stats import group_stats


def median_range(values: list[float], spec: str = "g") -> str:
    """``median [min, max]`` of ``values``, each number formatted by ``spec``; "-" if none."""
    if not values:
        return "-"
    return f"{np.median(values):{spec}} [{min(values):{spec}}, {max(values):{spec}}]"


def metric_of(runs: list[RunRecord]) -> str:
    return next((r.metric for r in runs if r.metric), "metric")


def _stat(values: list[float | None]) -> str:
    values = [v for v in values if v is not None]  # null: a non-finite number
    if not values:
        return "-"
    a = np.array(values)
    if len(a) == 1:
        return f"{a[0]:.4f}"
    # sample std (ddof=1), as in the study section: the seeds are a sample
    return f"{a.mean():.4f} ± {a.std(ddof=1):.4f} [{a.min():.4f}, {a.max():.4f}]"


def at_epochs_table(groups: dict[str, list[RunRecord]], epochs: list[float]) -> str:
    """The validation metric at each of ``epochs`` (the last evaluation at or before it),
    ``mean ± std [min, max]`` over the runs that got there."""
    metric = metric_of([r for runs in groups.values() for r in runs])
    rows = [
        "| configuration | " + " | ".join(f"epoch {e:g}" for e in epochs) + " |",
        "|---|" + "---|" * len(epochs),
    ]
    for label, runs in groups.items():
        done = [r for r in runs if r.records and not r.diverged]
        cells = []
        for e in epochs:
            reached = [r for r in done if r.records[-1]["epoch"] >= e - 1e-9]
            values = [
                [rec for rec in r.records if rec["epoch"] <= e + 1e-9][-1]["val"][metric]
                for r in reached
                if r.records[0]["epoch"] <= e + 1e-9
            ]
            cells.append(_stat(values) + (f" (n={len(values)})" if len(values) > 1 else ""))
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return f"Validation {metric} at fixed epochs, mean ± std [min, max] over seeds.\n\n" + (
        "\n".join(rows) + "\n"
    )


def reach_table(groups: dict[str, list[RunRecord]], thresholds: list[float], higher: bool) -> str:
    """Per configuration and threshold: how many seeds reached it (diverged runs count as
    not reaching it), and the epochs they took, median [min, max] over those that did."""
    metric = metric_of([r for runs in groups.values() for r in runs])
    sign = "≥" if higher else "≤"
    rows = [
        "| configuration | "
        + " | ".join(f"reached {sign} {x:g} | epochs to {x:g}" for x in thresholds)
        + " |",
        "|---|" + "---|---|" * len(thresholds),
    ]
    for label, runs in groups.items():
        cells = []
        for x in thresholds:
            g = group_stats(runs, x, higher)
            cells += [f"{g.successes}/{g.seeds}", median_range(g.epochs_to_threshold)]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return f"Epochs to reach each validation {metric}.\n\n" + "\n".join(rows) + "\n"


def markdown_table(groups: dict[str, list[RunRecord]]) -> str:
    """Best and final validation metric (and test at best) per configuration, over seeds.

    Cells read ``mean ± std [min, max]`` across seeds; diverged runs are counted in the
    seeds column, listed below the table, and left out of the statistics.
    """
    rows = [
        "| configuration | seeds | epochs | best val | final val | test at best |",
        "|---|---|---|---|---|---|",
    ]
    all_runs = [r for runs in groups.values() for r in runs]
    metric = metric_of(all_runs)
    for label, runs in groups.items():
        done = [r for r in runs if r.records and not r.diverged]
        best = [r.records[-1]["best"]["value"] for r in done]
        final = [r.records[-1]["val"][metric] for r in done]
        test = [
            r.summary["test_at_best"][metric]
            for r in done
            if r.summary and "test_at_best" in r.summary
        ]
        epochs = sorted({f"{r.records[-1]['epoch']:g}" for r in done})
        n_diverged = sum(r.diverged for r in runs)
        seeds = f"{len(runs)}" + (f", {n_diverged} diverged" if n_diverged else "")
        rows.append(
            f"| {label} | {seeds} | {', '.join(epochs)} | {_stat(best)} | "
            f"{_stat(final)} | {_stat(test)} |"
        )
    table = f"Validation/test {metric}, mean ± std [min, max] over seeds.\n\n" + "\n".join(rows)
    diverged = [r for r in all_runs if r.diverged]
    if diverged:
        table += "\n\nDiverged (non-finite loss or gradient), not in the statistics:\n"
        table += "".join(f"\n- {r.path} at step {r.summary['steps']}" for r in diverged)
    with_transfer = {k: [r for r in v if r.transfer] for k, v in groups.items()}
    with_transfer = {k: v for k, v in with_transfer.items() if v}
    Ts = transfer_lengths(groups)
    if Ts is not None:
        table += (
            "\n\nTransfer copying accuracy by T:\n\n| configuration | "
            + " | ".join(f"T={T}" for T in Ts)
            + " |\n|---|"
            + "---|" * len(Ts)
        )
        for label, runs in with_transfer.items():
            cols = [_stat(accs) for accs in transfer_accuracies(runs, Ts)]
            table += f"\n| {label} | " + " | ".join(cols) + " |"
    return table + "\n"

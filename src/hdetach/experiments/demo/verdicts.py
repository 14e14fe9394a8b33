"""What the demo's numbers show, in words: the comparisons of
``hdetach.experiments.report.stats.compare`` said as verdicts that claim no more than the
bootstrap CI and Mann-Whitney U agree on."""

from __future__ import annotations

import numpy as np

from hdetach.experiments.report.stats import compare


def verdict(
    vanilla: list[float], hdetach: list[float], label: str, measure: str = "best val acc"
) -> str:
    """What one measure (a value per seed of each model, larger is better) shows."""

    c = compare(hdetach, vanilla)
    if c is None:
        return "Too few finished seeds (fewer than 2 per model) to compare the models."
    numbers = (
        f"{label} minus vanilla: {c.diff:+.3f} in mean {measure}, 95% CI "
        f"[{c.low:+.3f}, {c.high:+.3f}], Mann-Whitney p = {c.p:.2g}, "
        f"{c.n_a} vs {c.n_b} seeds"
    )
    if c.within_noise:
        return f"Within noise ({numbers}): this run does not show either model better."
    better = label if c.diff > 0 else "vanilla"
    return f"{better} is better in this setting ({numbers})."


def transfer_verdict(per_T: dict[int, tuple[list[float], list[float]]], label: str) -> str:
    """The headline over the transfer gaps: ``per_T`` maps each T to the (vanilla,
    h-detach) accuracies per seed. Each T is judged on its own, as ``verdict`` does."""

    found = {T: compare(hd, van) for T, (van, hd) in per_T.items()}
    if not found or any(c is None for c in found.values()):
        return "Too few seeds with transfer results (fewer than 2 per model) to compare."
    Ts = list(found)
    noise = [T for T in Ts if found[T].within_noise]
    better = [T for T in Ts if T not in noise and found[T].diff > 0]
    worse = [T for T in Ts if T not in noise and found[T].diff < 0]
    shown = ", ".join(map(str, Ts))
    if noise == Ts:
        return (
            f"Transfer: within noise at every T tested ({shown}): this run does not show "
            "either model transferring better."
        )
    for at, winner, loser in ((better, label, "vanilla"), (worse, "vanilla", label)):
        if at == Ts:
            return (
                f"Transfer: {winner} transfers better than {loser} at every T tested "
                f"({shown}), each T judged on its own (95% CI excluding 0 and "
                "Mann-Whitney p < 0.05)."
            )
    parts = [(better, f"{label} better"), (worse, "vanilla better"), (noise, "within noise")]
    said = "; ".join(f"{words} at T = {', '.join(map(str, at))}" for at, words in parts if at)
    return f"Transfer, each T judged on its own: {said}."


def balance_verdict(vanilla: list[float], hdetach: list[float], label: str) -> str:
    """What the runs' gradient balance (late ||h-path|| / ||cell-path|| ratios) shows. The
    ratio spans decades, so the comparison is of log10 ratios."""

    c = compare(np.log10(hdetach).tolist(), np.log10(vanilla).tolist())
    if c is None:
        return "Too few tracked seeds (fewer than 2 per model) to compare the gradient balance."
    numbers = (
        f"{label} / vanilla: x{10**c.diff:.2g} in the geometric mean of the ratio, 95% CI "
        f"[x{10**c.low:.2g}, x{10**c.high:.2g}], Mann-Whitney p = {c.p:.2g}"
    )
    if c.within_noise:
        return f"Gradient balance within noise ({numbers})."
    lower = label if c.diff < 0 else "vanilla"
    return f"Gradient balance: {lower} keeps the h path smaller ({numbers})."

"""Statistics of a study: runs grouped by configuration, one value per distinct seed.

Per group: the spread of the best and final validation metric, the share of seeds that
reach a threshold and how soon, and the diverged count. Against a baseline group: the
difference of means with a bootstrap confidence interval and a Mann-Whitney U test
(both from SciPy), and a verdict that says "within noise" unless both agree.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
ALPHA = 0.05
BOOTSTRAP_SEED = 0  # the bootstrap's resampling is fixed, so a report is reproducible


def distinct_seeds(label: str, runs: list) -> list:
    """One run per seed (the first by folder); a repeated seed is said on stderr, since
    two runs of one seed are the same experiment twice, not two samples."""
    kept: dict[Any, Any] = {}
    for run in sorted(runs, key=lambda r: str(r.path)):
        seed = run.config.get("seed")
        if seed in kept:
            print(
                f"warning: {label}: seed {seed} in both {kept[seed].path} and {run.path}; "
                "counting the first",
                file=sys.stderr,
            )
        else:
            kept[seed] = run
    return list(kept.values())


@dataclass
class Spread:
    n: int
    mean: float
    std: float  # sample standard deviation (n - 1); 0 for one value
    median: float
    min: float
    max: float

    @classmethod
    def of(cls, values: list[float]) -> Spread | None:
        a = np.asarray([v for v in values if v is not None], dtype=float)
        if not len(a):
            return None
        std = float(a.std(ddof=1)) if len(a) > 1 else 0.0
        return cls(
            len(a), float(a.mean()), std, float(np.median(a)), float(a.min()), float(a.max())
        )


def first_reaching(records: list[dict], metric: str, threshold: float, higher: bool):
    """The first evaluation record whose validation ``metric`` reaches ``threshold``."""
    for rec in records:
        value = rec["val"].get(metric)
        if value is not None and (value >= threshold if higher else value <= threshold):
            return rec
    return None


@dataclass
class GroupStats:
    """One configuration over its distinct seeds. ``best``/``final``: runs that did not
    diverge; ``test``: the test value at the best validation of the finished ones;
    ``successes``: runs that reached the threshold (None: no threshold)."""

    seeds: int
    diverged: int
    best: list[float]
    final: list[float]
    test: list[float] = field(default_factory=list)
    successes: int | None = None
    steps_to_threshold: list[int] | None = None
    epochs_to_threshold: list[float] | None = None

    @property
    def success_rate(self) -> float | None:
        return None if self.successes is None else self.successes / self.seeds


def group_stats(runs: list, threshold: float | None, higher: bool) -> GroupStats:
    """The statistics of one group's runs (already one per seed)."""
    done = [r for r in runs if r.records and not r.diverged]
    metric = next((r.metric for r in runs if r.metric), None)
    g = GroupStats(
        seeds=len(runs),
        diverged=sum(r.diverged for r in runs),
        best=[r.records[-1]["best"]["value"] for r in done],
        final=[r.records[-1]["val"][metric] for r in done],
        test=[
            r.summary["test_at_best"][metric]
            for r in done
            if r.summary and r.summary.get("test_at_best", {}).get(metric) is not None
        ],
    )
    if threshold is not None:
        hits = [first_reaching(r.records, metric, threshold, higher) for r in done]
        hits = [h for h in hits if h is not None]
        g.successes = len(hits)
        g.steps_to_threshold = [h["step"] for h in hits]
        g.epochs_to_threshold = [h["epoch"] for h in hits]
    return g


@dataclass
class Comparison:
    """``a`` minus ``b`` (means), its bootstrap CI, the Mann-Whitney U p-value."""

    diff: float
    low: float
    high: float
    p: float
    n_a: int
    n_b: int

    @property
    def within_noise(self) -> bool:
        return self.low <= 0 <= self.high or self.p >= ALPHA

    def verdict(self, higher_is_better: bool) -> str:
        if self.within_noise:
            why = "the CI contains 0" if self.low <= 0 <= self.high else f"p = {self.p:.2g}"
            return f"within noise ({why})"
        better = (self.diff > 0) == higher_is_better
        return "better" if better else "worse"


def compare(a: list[float], b: list[float]) -> Comparison | None:
    """Difference of means of two independent samples; None with fewer than 2 in either."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return None
    ci = stats.bootstrap(
        (a, b),
        lambda x, y, axis: x.mean(axis) - y.mean(axis),
        confidence_level=CONFIDENCE,
        method="percentile",
        random_state=np.random.default_rng(BOOTSTRAP_SEED),
    ).confidence_interval
    p = stats.mannwhitneyu(a, b, alternative="two-sided").pvalue
    return Comparison(a.mean() - b.mean(), ci.low, ci.high, float(p), len(a), len(b))

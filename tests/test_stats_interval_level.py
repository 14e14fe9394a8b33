"""The level of the report's bootstrap interval, pinned by a large-sample case.

With 400 values per sample the bootstrap distribution of a difference of means is
normal to a good approximation, with standard error sqrt(var(a)/n + var(b)/n) (the
plug-in, ddof=0, variances). Its 95% percentile interval is then the difference
+- 1.960 standard errors; 90% would give 1.645, 80% 1.282.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from hdetach.experiments.report.stats import compare


def test_the_bootstrap_interval_is_95_percent():
    rng = np.random.default_rng(20)
    n = 400
    a, b = rng.normal(0.7, 0.2, n), rng.normal(0.6, 0.3, n)
    c = compare(a.tolist(), b.tolist())
    se = np.sqrt(a.var() / n + b.var() / n)
    z = (c.high - c.low) / (2 * se)
    # 9999 resamples place each quantile within about 0.03 standard errors: 4% is wide
    # for noise and narrow against the next level down (1.645 is 16% below).
    assert z == pytest.approx(norm.ppf(0.975), rel=0.04)
    assert (c.low + c.high) / 2 == pytest.approx(c.diff, abs=0.1 * se)  # centred

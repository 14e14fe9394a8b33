"""Transfer comparisons of a copying study: each h-detach group against vanilla at each
test T (mean ± sample std, h-detach minus vanilla with its 95% bootstrap CI and
Mann-Whitney p, and the verdict in words), from the runs' transfer.json files.

    python results/studies/compare_transfer.py STUDY_DIR
"""

import sys

from hdetach.demo_verdicts import verdict
from hdetach.report import find_runs, group_runs
from hdetach.stats import Spread
from hdetach.study import one_run_per_seed

groups = one_run_per_seed(group_runs(find_runs(sys.argv[1:])))
Ts = next(r.transfer["T"] for runs in groups.values() for r in runs if r.transfer)
acc = {
    label: [
        [r.transfer["acc"][i] for r in runs if r.transfer and r.transfer["T"] == Ts]
        for i in range(len(Ts))
    ]
    for label, runs in groups.items()
}
print("| model | n | " + " | ".join(f"T={T}" for T in Ts) + " |\n|---|---|" + "---|" * len(Ts))
for label, per_T in acc.items():
    cells = [Spread.of(v) for v in per_T]
    shown = ["-" if s is None else f"{s.mean:.3f} ± {s.std:.3f}" for s in cells]
    print(f"| {label} | {len(per_T[0])} | " + " | ".join(shown) + " |")
for label in acc:
    if label != "vanilla":
        for i, T in enumerate(Ts):
            print(
                f"T={T}: " + verdict(acc["vanilla"][i], acc[label][i], label, f"accuracy at T={T}")
            )

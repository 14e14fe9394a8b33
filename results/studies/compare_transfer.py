"""Transfer comparisons of a copying study, from its runs' transfer.json files: the
demo's transfer table and verdicts, for every h-detach group against vanilla.

    PYTHONPATH=src python results/studies/compare_transfer.py STUDY_DIR
"""

import sys

from hdetach.experiments.demo.command import print_transfer
from hdetach.experiments.report.runs import find_runs, group_runs
from hdetach.experiments.report.study import one_run_per_seed

groups = one_run_per_seed(group_runs(find_runs(sys.argv[1:])))
Ts = next(r.transfer["T"] for runs in groups.values() for r in runs if r.transfer)
print_transfer(groups, [label for label in groups if label != "vanilla"], Ts)

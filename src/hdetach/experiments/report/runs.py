"""Finished and unfinished run folders as the report reads them: config, metric records,
summary and transfer results, grouped into configurations (runs that differ only in
their seed).
"""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hdetach.experiments.run.folder import RunFolder, RunFolderError

# Config keys that never define a configuration (seeds are what we average over).
NOT_CONFIG = {
    "seed",
    "run_dir",
    "device",
    "data_dir",
    "total_steps",
    "eval_batch_size",
    "track_gradients",
}


@dataclass
class RunRecord:
    """One run folder as the report reads it (``read_run``): its config, metric lines,
    summary and transfer results (the folder's files: ``run.folder.RunFolder``; the
    training run itself: ``run.session.TrainingRun``)."""

    path: Path
    config: dict[str, Any]
    records: list[dict[str, Any]]
    summary: dict[str, Any] | None
    transfer: dict[str, Any] | None

    @property
    def metric(self) -> str | None:
        """The selection metric the run recorded (summary.json, else its metric lines);
        None for a run that has not evaluated yet."""
        if self.summary and "metric" in self.summary:
            return self.summary["metric"]
        return self.records[-1]["metric"] if self.records else None

    @property
    def diverged(self) -> bool:
        return bool(self.summary) and self.summary.get("status") == "diverged"


# (option, value): the configurations others are compared with, all else equal.
Baseline = tuple[str, Any]


class NotARun(ValueError):
    """A directory whose files are not those of an hdetach run (of this version)."""


_RECORD_KEYS = ("epoch", "val", "best")  # besides "step", which RunFolder checks


def read_run(d: Path) -> RunRecord:
    """The files of one run directory, checked; raises RunFolderError (a file that cannot
    be read) or NotARun (files of another program or version), naming the folder."""
    folder = RunFolder(d)
    config = folder.read_config()
    if config is None or "task" not in config:
        raise NotARun(f"{d}: config.json is not an hdetach config")
    records = folder.read_metrics()
    for i, rec in enumerate(records, 1):
        if any(k not in rec for k in _RECORD_KEYS):
            raise NotARun(f"{d}: metrics.jsonl line {i} is not an hdetach metrics record")
    summary = folder.read_summary()
    run = RunRecord(d, config, records, summary, folder.read_transfer())
    if (records or summary) and not (
        (summary and "metric" in summary) or (records and "metric" in records[-1])
    ):
        raise NotARun(f"{d}: no metric name recorded (written by another version of hdetach?)")
    return run


def find_runs(paths: list[str | Path]) -> list[RunRecord]:
    """Every run directory (one holding config.json) at or below the given paths; a
    directory whose files are not an hdetach run's is skipped with a warning line."""
    dirs: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise FileNotFoundError(f"RUN_DIR {p}: not a directory")
        found = RunFolder.find(p)
        if not found:
            raise FileNotFoundError(f"RUN_DIR {p}: no run directories (config.json) in it")
        dirs += found
    runs = []
    for d in dict.fromkeys(dirs):
        try:
            runs.append(read_run(d))
        except (NotARun, RunFolderError) as e:
            print(f"warning: skipping {e}", file=sys.stderr)
    where = ", ".join(map(str, paths))
    if not runs:
        raise FileNotFoundError(f"RUN_DIR {where}: no usable run directories")
    metrics = Counter(r.metric for r in runs if r.metric)
    if not metrics:  # runs just started: nothing to plot or compare
        raise NotARun(f"RUN_DIR {where}: no run has been evaluated yet (no metric records)")
    if len(metrics) > 1:  # one table, one axis: acc and mse (say) cannot share them
        counts = ", ".join(f"{m} in {n}" for m, n in sorted(metrics.items()))
        raise NotARun(
            f"RUN_DIR {where}: the runs record different metrics ({counts} runs); "
            "report each kind of run on its own"
        )
    return runs


def up_to_epoch(run: RunRecord, epoch: float) -> RunRecord:
    """The run as it stood at ``epoch``: its evaluations up to then, so that studies of
    different lengths compare at a common one. A run that went on past ``epoch`` is read
    as a run of ``epoch`` epochs still training there (no divergence, no end), and keeps
    its test metric and transfer results only where its best model was found by then
    (they are the best model's, so the window's best is the same)."""
    records = [r for r in run.records if r["epoch"] <= epoch]
    end, per_epoch = (run.summary or {}).get("steps"), run.config.get("steps_per_epoch")
    if end is not None and per_epoch:  # it had ended (finished, diverged) by then
        ended = end <= epoch * per_epoch
    else:  # still training, or an old summary: nothing past the window
        ended = len(records) == len(run.records)
    if ended:
        return run
    # a run set for more epochs is, read to ``epoch``, a run of that length: it pairs
    # with runs that were set for that many
    length = int(epoch) if float(epoch).is_integer() else epoch  # configs hold ints
    config = {**run.config, "epochs": length} if "epochs" in run.config else run.config
    if not records:  # not evaluated yet at that epoch
        return RunRecord(run.path, config, [], None, None)
    summary = {"status": "running", "metric": run.metric}
    best_step = (run.summary or {}).get("best_step")
    kept = best_step is not None and best_step <= records[-1]["step"]
    if kept and "test_at_best" in run.summary:
        summary["test_at_best"] = run.summary["test_at_best"]
    return RunRecord(run.path, config, records, summary, run.transfer if kept else None)


def _label(config: dict[str, Any], keys: list[str]) -> str:
    parts = []
    for k in keys:
        v = config.get(k)  # runs of other versions may lack an option the others have
        if k == "p_detach" and isinstance(v, (int, float)):
            parts.append("vanilla" if v == 0 else f"h-detach p={v:g}")
        else:
            parts.append(f"{k}={v}")
    return ", ".join(parts) or config["task"]


def varying_options(configs: list[dict[str, Any]]) -> list[str]:
    """The options (but ``NOT_CONFIG``) whose values differ between ``configs``, sorted."""
    keys = sorted({k for c in configs for k in c} - NOT_CONFIG)
    return [k for k in keys if len({json.dumps(c.get(k)) for c in configs}) > 1]


def group_runs(runs: list[RunRecord]) -> dict[str, list[RunRecord]]:
    """Configuration label -> its runs; the label names the options that vary across runs."""
    varying = varying_options([r.config for r in runs])
    # p_detach first: it is the comparison this project is about.
    varying.sort(key=lambda k: (k != "p_detach", k))
    groups: dict[str, list[RunRecord]] = defaultdict(list)
    for r in runs:
        groups[_label(r.config, varying)].append(r)
    return dict(groups)


def transfer_lengths(groups: dict[str, list[RunRecord]]) -> list[int] | None:
    """The lengths T the first run with transfer results was evaluated at (None: no run
    was); runs evaluated at another list of T are not compared with it."""
    found = (r.transfer["T"] for runs in groups.values() for r in runs if r.transfer)
    return next(found, None)


def transfer_accuracies(runs: list[RunRecord], Ts: list[int]) -> list[list[float]]:
    """Per T of ``Ts``, the transfer accuracy of each run evaluated at exactly ``Ts``."""
    done = [r for r in runs if r.transfer and r.transfer["T"] == Ts]
    return [[r.transfer["acc"][i] for r in done] for i in range(len(Ts))]

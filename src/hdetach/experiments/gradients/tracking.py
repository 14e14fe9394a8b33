"""The gradient balance along training: ``train --track-gradients N`` and its report plot.

Every N steps (step 0, the initialization, included) the tracker measures the gradient
split of the current parameters on one fixed minibatch: the first ``batch_size``
validation examples, so that successive measurements differ only by the weights. The
measurements since the previous evaluation go into that evaluation's metrics.jsonl line
as ``"gradients": [{"step": s, <group>: norms, ...}, ...]`` and into TensorBoard under
``gradients/<group>/<quantity>``. ``gradient_paths`` leaves ``.grad`` and every random
generator as they were, so a tracked run trains exactly like an untracked one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter

from hdetach.analysis.paths import gradient_paths
from hdetach.experiments.run.folder import RunFolder
from hdetach.experiments.run.session import Callback

TRACKED_GROUPS = ("W_ih", "W_hh", "bias", "lstm", "total")


class GradientTracker(Callback):
    """Measures ``gradient_paths`` every ``every`` steps; see the module docstring.

    A run stopped with Ctrl-C between evaluations loses the measurements taken since the
    last evaluation (its resumed steps start after the stop and are not measured twice).
    """

    def __init__(self, every: int):
        self.every = every
        self.pending: list[dict[str, Any]] = []
        self.batch: tuple[torch.Tensor, torch.Tensor] | None = None
        self.writer = None

    def after_backward(self, run) -> None:
        if run.step % self.every:
            return
        if self.batch is None:
            n = min(run.cfg.batch_size, run.task.size("val"))
            x, y = run.task.batch("val", torch.arange(n))
            self.batch = (x.to(run.cfg.device), y.to(run.cfg.device))
        x, y = self.batch
        model, task = run.model, run.task
        summary = gradient_paths(model, lambda: task.loss_and_metrics(model(x), y)[0]).summary()
        groups = {g: summary["groups"][g] for g in TRACKED_GROUPS if g in summary["groups"]}
        self.pending.append({"step": run.step, **groups})
        self._write_tensorboard(run, groups)

    def on_eval(self, run, record: dict[str, Any]) -> None:
        record["gradients"], self.pending = self.pending, []

    def _write_tensorboard(self, run, groups: dict[str, dict]) -> None:
        if self.writer is None:  # a writer of its own in the run's folder, beside the loop's
            self.writer = SummaryWriter(str(run.folder.tensorboard), filename_suffix=".gradients")
        for group, norms in groups.items():
            for key, value in norms.items():
                if value is not None:  # undefined ratios and cosines
                    self.writer.add_scalar(f"gradients/{group}/{key}", value, run.step)
        self.writer.flush()


def read_tracked(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every tracked measurement of a run, in step order (empty if none)."""
    records = RunFolder(run_dir).read_metrics()
    return [m for record in records for m in record.get("gradients", [])]


def late_ratio(run_dir: str | Path, group: str = "lstm") -> float | None:
    """A run's gradient balance once training is under way: the median of its tracked
    ||h-path|| / ||cell-path|| over the second half of its steps (None if untracked)."""
    steps, ratios = ratio_series(Path(run_dir), group)
    if not steps:
        return None
    late = [r for t, r in zip(steps, ratios) if t >= steps[-1] / 2]
    return float(np.median(late))


def ratio_series(run_dir: Path, group: str) -> tuple[list[int], list[float]]:
    """The tracked steps of a run and its ||h-path|| / ||cell-path|| ratio of ``group`` at each."""
    steps, ratios = [], []
    for m in read_tracked(run_dir):
        ratio = m.get(group, {}).get("ratio")
        if ratio is not None and ratio > 0:
            steps.append(m["step"])
            ratios.append(ratio)
    return steps, ratios

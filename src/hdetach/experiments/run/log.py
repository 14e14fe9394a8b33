"""Where a run reports: a progress bar or a line a minute on stderr, metrics.jsonl, TensorBoard.

Reading a training metric off the device waits for it, so the loop hands this class
numbers only at evaluations and when ``due()`` says a progress update is due.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from hdetach.experiments.run.files import to_json
from hdetach.experiments.run.folder import RunFolder

clock = time.perf_counter  # the clock of throughput and ETA (a module attribute: tests replace it)

UPDATE_SECONDS = 1.0  # between progress updates (each reads the device once)
LINE_SECONDS = 60.0  # without a bar, one progress line this often


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def _metric_text(means: dict[str, float], metric: str) -> str:
    """ " <metric> <value>", or nothing for a metric measured on validation only (CIDEr)."""
    return f" {metric} {means[metric]:.4f}" if metric in means else ""


class RunLog:
    """Progress, metric records and messages of one run; a context manager."""

    def __init__(
        self, run_dir: Path, total_steps: int, step: int, desc: str, progress: bool | None
    ):
        self.folder, self.name, self.total_steps = RunFolder(run_dir), run_dir.name, total_steps
        self.show_bar = sys.stderr.isatty() if progress is None else progress
        self.bar = tqdm(
            total=total_steps,
            initial=step,
            disable=not self.show_bar,
            dynamic_ncols=True,
            desc=desc,
        )
        self.tb = SummaryWriter(str(self.folder.tensorboard), purge_step=step if step else None)
        self.started, self.start_step = clock(), step
        self.last_update = self.last_line = clock()
        self.start_interval()

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()
        self.tb.close()

    def line(self, msg: str) -> None:
        """One message line on stderr (above the bar when there is one)."""
        (self.bar.write if self.show_bar else print)(msg, file=sys.stderr)
        sys.stderr.flush()

    # --- throughput of the training steps, excluding evaluations
    def start_interval(self) -> None:
        self.interval_start, self.interval_seqs = clock(), 0

    def count(self, n_seqs: int) -> None:
        """One training step of ``n_seqs`` sequences is done."""
        self.interval_seqs += n_seqs
        self.bar.update(1)

    def seq_per_s(self) -> float:
        return self.interval_seqs / max(clock() - self.interval_start, 1e-9)

    def eta(self, step: int) -> str:
        done = step - self.start_step
        if done <= 0:
            return "?"
        return _minutes((self.total_steps - step) * (clock() - self.started) / done)

    def due(self) -> bool:
        """Whether a progress update is due (time-based: reads nothing off the device)."""
        return clock() - self.last_update >= UPDATE_SECONDS

    def progress(self, step: int, metric: str, means: Callable[[], dict[str, float]]) -> None:
        """Show the training averages since the last evaluation, ``means()``, on the bar,
        or in a line if a minute has passed since the last one."""
        self.last_update = clock()
        if self.show_bar:
            m = means()
            shown = {k: f"{m[k]:.4f}" for k in ("loss", metric) if k in m}
            self.bar.set_postfix(**shown, seq_s=f"{self.seq_per_s():.0f}")
        elif self.last_update - self.last_line >= LINE_SECONDS:
            m, self.last_line = means(), self.last_update
            self.line(
                f"[{self.name}] step {step}/{self.total_steps} loss {m['loss']:.4f}"
                f"{_metric_text(m, metric)} | {self.seq_per_s():.0f} seq/s | "
                f"ETA {self.eta(step)}"
            )

    def record(self, rec: dict[str, Any], metric: str) -> None:
        """One evaluation: a metrics.jsonl line, TensorBoard scalars and a stderr line."""
        self.folder.append_metrics(rec)
        for split in ("train", "val"):
            for k, v in rec[split].items():
                self.tb.add_scalar(f"{split}/{k}", v, rec["step"])
        self.tb.add_scalar("p_detach", rec["p_detach"], rec["step"])
        self.tb.flush()
        tr, val = rec["train"], rec["val"]
        self.line(
            f"[{self.name}] step {rec['step']}/{self.total_steps} epoch "
            f"{rec['epoch']:.2f} train loss {tr['loss']:.4f}{_metric_text(tr, metric)} | "
            f"val loss {val['loss']:.4f}{_metric_text(val, metric)} | "
            f"{rec['time']['seq_per_s']:.0f} seq/s | ETA {self.eta(rec['step'])}"
        )
        self.last_update = self.last_line = clock()

    def config(self, cfg: dict[str, Any]) -> None:
        self.line(to_json(cfg))

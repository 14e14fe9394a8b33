"""The gradient balance along training: ``train --track-gradients N`` and its report plot.

Every N steps the loop appends one line ``{"step": s, "gradients": {group: norms}}`` to
metrics.jsonl (beside the evaluation lines, which hold "val") and the same numbers to
TensorBoard under ``gradients/<group>/<quantity>``. The measurement runs on the step's
minibatch with the parameters after the update; it leaves ``.grad`` and every random
generator as they were, so a tracked run trains exactly like an untracked one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from torch import Tensor, nn

from hdetach.analysis.paths import gradient_paths

TRACKED_GROUPS = ("W_ih", "W_hh", "bias", "lstm", "total")
# Cost measured side by side on the 2-core CPU VM, 1 thread, copy T=50, H=64, batch 100:
# a tracked measurement takes 2.0x the time of the training step's forward+backward.
TRACK_HELP = (
    "every N steps, log the gradient split into cell path and h path (norms, "
    "||h-path||/||cell-path||, cosines; W_ih, W_hh, biases) to metrics.jsonl and "
    "TensorBoard. Each tracked step costs two extra forward+backward passes (measured: "
    "2.0x a training step's forward+backward), so N=100 adds about 2%% (default 0: off)"
)


def gradient_record(model: nn.Module, loss_fn: Callable[[], Tensor]) -> dict[str, dict]:
    """{group: norms} for the tracked parameter groups (see ``GradientPaths.summary``)."""
    groups = gradient_paths(model, loss_fn).summary()["groups"]
    return {g: groups[g] for g in TRACKED_GROUPS if g in groups}


def tensorboard_scalars(record: dict[str, dict]) -> dict[str, float]:
    """TensorBoard tag -> value; undefined ratios and cosines (None) are left out."""
    return {
        f"gradients/{group}/{key}": value
        for group, norms in record.items()
        for key, value in norms.items()
        if value is not None
    }


def read_tracked(run_dir: str | Path) -> list[dict]:
    """The tracked lines of a run's metrics.jsonl, in step order (empty if none)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    lines = (json.loads(line) for line in path.read_text().splitlines())
    return [line for line in lines if "gradients" in line]


def _ratio_series(run_dir: Path, group: str) -> tuple[list[int], list[float]]:
    steps, ratios = [], []
    for line in read_tracked(run_dir):
        ratio = line["gradients"].get(group, {}).get("ratio")
        if ratio is not None:
            steps.append(line["step"])
            ratios.append(ratio)
    return steps, ratios


def plot_gradient_balance(
    groups: dict[str, list[Path]], out: Path, group: str = "lstm"
) -> Path | None:
    """||hidden|| / ||cell|| against training steps: per configuration the mean over its
    seeds (geometric: the ratio spans decades) and a min-max band. None if nothing tracked."""
    from hdetach.report import _pyplot

    series = {
        label: [s for s in (_ratio_series(d, group) for d in run_dirs) if s[0]]
        for label, run_dirs in groups.items()
    }
    series = {label: runs for label, runs in series.items() if runs}
    if not series:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for label, runs in series.items():
        n = min(len(steps) for steps, _ in runs)  # unfinished runs: the common prefix
        steps = runs[0][0][:n]
        logs = np.log10([ratios[:n] for _, ratios in runs])
        (line,) = ax.plot(steps, 10 ** logs.mean(0), label=f"{label} (n={len(runs)})")
        if len(runs) > 1:
            ax.fill_between(
                steps, 10 ** logs.min(0), 10 ** logs.max(0), color=line.get_color(), alpha=0.2
            )
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel(f"||h-path|| / ||cell-path||  ({group} weights)")
    ax.set_title("gradient balance along training")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out

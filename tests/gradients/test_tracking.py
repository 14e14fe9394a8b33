"""train --track-gradients: what it logs, that it changes nothing else, and its plot."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from hdetach.experiments.config import Config
from hdetach.experiments.gradients.plots import plot_gradient_balance
from hdetach.experiments.gradients.tracking import TRACKED_GROUPS, read_tracked
from hdetach.experiments.report.report import report
from hdetach.experiments.run.checkpoint import load_checkpoint
from hdetach.experiments.train.loop import train

TINY = dict(task="copy", T=5, hidden_size=8, epochs=2, steps_per_epoch=10, n_train=50, n_val=20)


def _run(tmp_path, name: str, **options) -> dict:
    cfg = Config(**{**TINY, **options, "run_dir": str(tmp_path / name)})
    return train(cfg, progress=False)


def test_tracking_logs_every_n_steps_and_leaves_training_unchanged(tmp_path):
    plain = _run(tmp_path, "plain", p_detach=0.5)
    tracked = _run(tmp_path, "tracked", p_detach=0.5, track_gradients=3)

    measurements = read_tracked(tmp_path / "tracked")
    assert [m["step"] for m in measurements] == [0, 3, 6, 9, 12, 15, 18]
    for m in measurements:
        assert set(m) == {"step", *TRACKED_GROUPS}
        norms = m["W_hh"]
        assert norms["ratio"] == pytest.approx(norms["hidden"] / norms["cell"])
    # Same random draws and the same updates: identical weights and metrics.
    for ckpt in ("last.pt", "best.pt"):
        a = load_checkpoint(tmp_path / "plain" / ckpt)["model"]
        b = load_checkpoint(tmp_path / "tracked" / ckpt)["model"]
        assert all(torch.equal(a[k], b[k]) for k in a), ckpt
    assert plain["test_at_best"] == tracked["test_at_best"]
    assert read_tracked(tmp_path / "plain") == []
    events = list((tmp_path / "tracked" / "tb").glob("*.gradients"))
    assert len(events) == 1 and events[0].stat().st_size > 0


def test_report_draws_the_balance_of_tracked_runs(tmp_path):
    short = dict(epochs=1, track_gradients=5)
    _run(tmp_path / "runs", "v0", p_detach=0.0, seed=0, **short)
    for seed in (0, 1):
        _run(tmp_path / "runs", f"h{seed}", p_detach=0.5, seed=seed, **short)
    written = report([tmp_path / "runs"], tmp_path / "out")
    assert written["gradients"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| h-detach p=0.5 | 2 |" in written["table"].read_text()  # not a config key
    assert plot_gradient_balance({"none": [tmp_path / "nothing"]}, tmp_path / "x.png") is None


def test_negative_track_gradients_is_a_one_line_cli_error(tmp_path):
    argv = ["train", "copy", "--track-gradients", "-1", "--run-dir", str(tmp_path / "r")]
    result = subprocess.run(
        [sys.executable, "-m", "hdetach", *argv], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "--track-gradients must be >= 0" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

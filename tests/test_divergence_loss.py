"""A non-finite loss with a finite gradient norm is a divergence too.

A constant inf added to the loss leaves every gradient as it was (the derivative of a
sum passes through), so only a watch that reads the loss itself can see it.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import TINY_COPY

from hdetach.experiments.config import Config
from hdetach.experiments.run.session import DivergenceWatch
from hdetach.experiments.tasks import copying
from hdetach.experiments.train import loop as train_module
from hdetach.experiments.train.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_watch_reports_a_non_finite_loss_whose_gradient_norm_is_finite():
    watch = DivergenceWatch(step=10, device="cpu")
    watch.update(torch.tensor(0.5), torch.tensor(3.0))
    watch.update(torch.tensor(math.inf), torch.tensor(3.0))
    bad = watch.check()
    assert (bad.step, bad.what, bad.value) == (12, "loss", math.inf)


@pytest.mark.parametrize("every_step", [True, False], ids=["cpu-check", "gpu-check"])
def test_a_run_whose_loss_alone_is_inf_is_recorded_as_diverged(tmp_path, monkeypatch, every_step):
    monkeypatch.setattr(train_module, "checks_every_step", lambda device: every_step)
    original, calls, norms = copying.CopyingTask.loss_and_metrics, [0], []

    def inf_loss_at_step_7(self, out, y):
        loss, metrics = original(self, out, y)
        if torch.is_grad_enabled():  # a training step, not an evaluation
            calls[0] += 1
            if calls[0] == 7:
                loss = loss + math.inf
        return loss, metrics

    original_clip = train_module.TrainingRun.clip_gradients

    def recording_clip(self):
        norm = original_clip(self)
        norms.append(float(norm))
        return norm

    monkeypatch.setattr(copying.CopyingTask, "loss_and_metrics", inf_loss_at_step_7)
    monkeypatch.setattr(train_module.TrainingRun, "clip_gradients", recording_clip)
    run_dir = tmp_path / "run"
    summary = train(Config(**TINY_COPY, max_steps=20, run_dir=str(run_dir)), progress=False)
    assert all(map(math.isfinite, norms))  # the gradients never saw the inf
    assert summary["status"] == "diverged" and summary["steps"] == 7
    saved = json.loads((run_dir / "summary.json").read_text())
    assert saved["status"] == "diverged" and saved["diverged"]["what"] == "loss"

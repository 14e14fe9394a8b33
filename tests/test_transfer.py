"""Transfer copying: a trained copy model evaluated at the requested gap lengths."""

import json

import pytest
import torch

from hdetach.experiments.config import ConfigError
from hdetach.experiments.model import SequenceModel
from hdetach.experiments.transfer.evaluate import transfer

pytestmark = pytest.mark.usefixtures("one_thread")


def test_evaluates_at_each_requested_T(trained_copy_run, monkeypatch):
    run_dir, _ = trained_copy_run
    lengths = []
    forward = SequenceModel.forward

    def spy(self, x):
        lengths.append(x.shape[1])
        return forward(self, x)

    monkeypatch.setattr(SequenceModel, "forward", spy)
    result = transfer(run_dir, [1, 7, 30], n=40, batch_size=40)
    assert lengths == [1 + 20, 7 + 20, 30 + 20]  # one batch per T, a sequence is T + 20
    assert result["T"] == [1, 7, 30] and len(result["acc"]) == 3


def test_the_trained_model_copies_at_its_training_gap(trained_copy_run):
    run_dir, summary = trained_copy_run
    result = transfer(run_dir, [1], n=1000, batch_size=500)
    # fresh sequences, same task: close to the run's own test accuracy, far above
    # chance (1/8), which an untrained or wrongly loaded model would score
    assert result["acc"][0] > 0.5
    assert abs(result["acc"][0] - summary["test_at_best"]["acc"]) < 0.1
    assert result["train_T"] == 1 and result["step"] == summary["best_step"]
    saved = json.loads((run_dir / "transfer.json").read_text())
    assert saved == result


def test_same_seed_same_sequences_other_seed_other(trained_copy_run):
    run_dir, _ = trained_copy_run
    a = transfer(run_dir, [3], n=200, seed=5)["acc"]
    b = transfer(run_dir, [3], n=200, seed=5)["acc"]
    c = transfer(run_dir, [3], n=200, seed=6)["acc"]
    assert a == b and a != c


def test_bad_requests_are_named(trained_copy_run, tmp_path):
    run_dir, _ = trained_copy_run
    with pytest.raises(ConfigError, match="--T needs one or more positive"):
        transfer(run_dir, [0])
    with pytest.raises(ConfigError, match="--n and --batch-size must be >= 1"):
        transfer(run_dir, [5], n=0)
    with pytest.raises(ConfigError, match="--device must be"):
        transfer(run_dir, [5], device="cpux")
    with pytest.raises(ConfigError, match="no such checkpoint"):
        transfer(tmp_path / "nothing.pt", [5])
    ck = torch.load(run_dir / "best.pt", weights_only=True)
    ck["config"]["task"] = "adding"
    torch.save(ck, tmp_path / "adding.pt")
    with pytest.raises(ConfigError, match="needs a copy-task run"):
        transfer(tmp_path / "adding.pt", [5])

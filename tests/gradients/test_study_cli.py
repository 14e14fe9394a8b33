"""The weight-scale study, the trained-run analysis and the ``analyze`` command."""

from __future__ import annotations

import json
import math

import pytest
import torch

from hdetach.analysis import gradient_paths
from hdetach.experiments.cli import main
from hdetach.experiments.config import Config
from hdetach.experiments.gradients.weight_scale import (
    StudySettings,
    study_config,
    weight_scale_study,
)
from hdetach.experiments.model import SequenceModel
from hdetach.experiments.run.checkpoint import load_checkpoint
from hdetach.experiments.tasks.registry import make_task
from hdetach.experiments.train.loop import train
from hdetach.rng import seed_everything

SMALL = dict(T=6, hidden_size=5, batch_size=4, seeds=2, scales=(0.5, 2.0), first=3, end_steps=3)


def _strict_json(path) -> dict:
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_study_numbers_are_those_of_gradient_paths_on_the_scaled_model():
    settings = StudySettings(**SMALL)
    result = weight_scale_study(settings)
    assert [len(result.per_seed[s]) for s in settings.scales] == [2, 2]

    # Seed 1 at scale 2, recomputed from scratch: the study's model, data and scaling.
    cfg = study_config(settings, 1)
    task = make_task(cfg)
    seed_everything(1)
    model = SequenceModel(cfg, task).double().train()
    with torch.no_grad():
        model.lstm.weight_hh_l0.mul_(2.0)
    x, y = task.batch("val", torch.arange(4))
    paths = gradient_paths(model, lambda: task.loss_and_metrics(model(x.double()), y)[0])
    expected = paths.summary()["groups"]
    assert result.per_seed[2.0][1]["ratio"]["W_hh"] == pytest.approx(expected["W_hh"]["ratio"])
    assert result.per_seed[2.0][1]["groups"]["lstm"] == pytest.approx(expected["lstm"])

    summary = result.to_json()["summary"]["2.0"]["ratio.lstm"]
    ratios = [r["ratio"]["lstm"] for r in result.per_seed[2.0]]
    assert summary["n"] == 2
    assert summary["mean"] == pytest.approx(sum(ratios) / 2)
    assert summary["std"] == pytest.approx(abs(ratios[0] - ratios[1]) / 2)


def test_analyze_study_writes_strict_json_and_plots(tmp_path, capsys):
    main(
        ["analyze", "--seeds", "2", "--T", "6", "--hidden-size", "5", "--batch-size", "4"]
        + ["--scales", "0.5", "4", "--first", "3", "--end-steps", "3", "--no-progress"]
        + ["--out", str(tmp_path)]
    )
    result = _strict_json(tmp_path / "study.json")
    assert result["settings"]["scales"] == [0.5, 4.0]
    assert result["run"]["wall_s"] > 0
    for name in ("ratio.png", "first_steps.png", "profiles.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    profile = result["mean_input_gradient_profile"]["4.0"]["cell"]
    assert len(profile) == 6 + 20 and all(math.isfinite(v) for v in profile)
    assert "| 4 | 2 |" in capsys.readouterr().out


def test_analyze_a_trained_run(tmp_path, capsys):
    run_dir = tmp_path / "run"
    cfg = dict(task="copy", T=4, hidden_size=6, epochs=1, steps_per_epoch=5, n_train=20)
    train(Config(**cfg, n_val=8, p_detach=0.5, run_dir=str(run_dir)), progress=False)
    main(["analyze", str(run_dir), "--batch-size", "8", "--first", "3", "--end-steps", "3"])
    result = _strict_json(run_dir / "analysis" / "analysis.json")
    assert "p_detach 0.5" in capsys.readouterr().out
    assert (run_dir / "analysis" / "profiles.png").is_file()
    assert set(result["profiles"]["full"]) == {"x", "h", "c"}

    config = Config(**json.loads((run_dir / "config.json").read_text()))
    task = make_task(config)
    model = SequenceModel(config, task)
    model.load_state_dict(load_checkpoint(run_dir / "best.pt")["model"])
    model = model.double().train()
    x, y = task.batch("val", torch.arange(8))
    paths = gradient_paths(model, lambda: task.loss_and_metrics(model(x.double()), y)[0])
    assert result["groups"]["lstm"] == pytest.approx(paths.summary()["groups"]["lstm"])


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--seeds", "0"], "--seeds must be >= 1"),
        (["--scales", "1", "-2"], "--scales must all be > 0"),
        (["no/such/run"], "RUN_DIR no/such/run: no config.json"),
    ],
)
def test_bad_options_are_one_line_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["analyze", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1

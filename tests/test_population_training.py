"""Population training: members trained together equal the same runs trained alone,
stop alone, resume together or alone, and a sweep trains them as populations."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import TINY_COPY, interrupt_at, run_cli, signal_sweep_at_checkpoint

from hdetach.experiments.config import Config, ConfigError
from hdetach.experiments.sweep.engines import run_one
from hdetach.experiments.sweep.grid import Grid
from hdetach.experiments.train import loop as train_module
from hdetach.experiments.train.loop import load_checkpoint, train
from hdetach.experiments.train.population import train_population

pytestmark = pytest.mark.usefixtures("one_thread")

RTOL, ATOL = 1e-5, 1e-8  # float rounding: the batched products sum in another order
# Three members that differ in seed, detach probability (0 and > 0) and learning rate,
# each clipping its gradient norm.
MEMBERS = [
    dict(seed=0, p_detach=0.0, lr=1e-3),
    dict(seed=1, p_detach=0.5, lr=3e-3),
    dict(seed=2, p_detach=0.25, lr=2e-3, clip_value=0.5),
]


def _cfg(where: Path, **options) -> Config:
    return Config(**{**TINY_COPY, "clip": "norm", **options}, run_dir=str(where))


def _record(run_dir: Path) -> dict:
    """A run's results: metrics.jsonl without wall-clock times (None: not written, as
    before a first evaluation), and summary.json."""
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else None
    metrics = lines and [{k: v for k, v in json.loads(x).items() if k != "time"} for x in lines]
    summary = json.loads((run_dir / "summary.json").read_text())
    summary.pop("run_dir")
    return {"metrics": metrics, "summary": summary}


def _assert_close(actual, expected, where: str = "") -> None:
    """Equal structure and non-float values; floats within RTOL (NaN, inf and None alike)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and actual.keys() == expected.keys(), where
        for k in expected:
            _assert_close(actual[k], expected[k], f"{where}/{k}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected)):
            _assert_close(a, e, f"{where}[{i}]")
    elif isinstance(expected, float) and math.isfinite(expected):
        assert isinstance(actual, float), where
        assert abs(actual - expected) <= ATOL + RTOL * abs(expected), (where, actual, expected)
    else:
        assert actual == expected, (where, actual, expected)


def _lone_twins(tmp_path: Path, members: list[dict]) -> list[Path]:
    dirs = [tmp_path / "alone" / str(k) for k in range(len(members))]
    for d, options in zip(dirs, members):
        train(_cfg(d, **options), progress=False)
    return dirs


def test_each_member_equals_the_same_run_trained_alone(tmp_path):
    dirs = [tmp_path / "population" / str(k) for k in range(len(MEMBERS))]
    summaries = train_population([_cfg(d, **m) for d, m in zip(dirs, MEMBERS)])
    assert [s["status"] for s in summaries] == ["finished"] * 3
    for member, twin in zip(dirs, _lone_twins(tmp_path, MEMBERS)):
        assert _record(member)["metrics"][-1]["step"] == 60
        _assert_close(_record(member), _record(twin))
        # the same data order and the same detach draws: equal generator states at the end
        ours, theirs = load_checkpoint(member / "last.pt"), load_checkpoint(twin / "last.pt")
        assert torch.equal(ours["rng"]["torch"], theirs["rng"]["torch"])
        assert torch.equal(ours["sampler"]["gen"], theirs["sampler"]["gen"])
        assert sorted(p.name for p in member.iterdir()) == sorted(p.name for p in twin.iterdir())
    # the members did differ: not one run three times
    assert len({json.dumps(_record(d)["summary"]) for d in dirs}) == 3


def test_each_member_is_bitwise_the_run_trained_alone(tmp_path):
    members = [MEMBERS[0], MEMBERS[1], dict(seed=2, p_detach=0.25, lr=1e-2, clip_value=0.5)]
    dirs = [tmp_path / "population" / str(k) for k in range(len(members))]
    train_population([_cfg(d, **m) for d, m in zip(dirs, members)])
    for member, twin in zip(dirs, _lone_twins(tmp_path, members)):
        assert _record(member) == _record(twin)


def test_clipping_one_member_leaves_the_others_alone(tmp_path):
    members = [
        dict(seed=0, p_detach=0.5, clip="value", clip_value=1e-4),  # every step clipped
        dict(seed=0, p_detach=0.5, clip="none"),
        dict(seed=1, p_detach=0.25, clip="norm", clip_value=1e-3),
    ]
    dirs = [tmp_path / "population" / str(k) for k in range(len(members))]
    train_population([_cfg(d, **m, max_steps=30) for d, m in zip(dirs, members)])
    twins = [tmp_path / "alone" / str(k) for k in range(len(members))]
    for d, m in zip(twins, members):
        train(_cfg(d, **m, max_steps=30), progress=False)
    for member, twin in zip(dirs, twins):
        _assert_close(_record(member), _record(twin))
    # the same seed and p: only the clipping tells the first two apart
    assert _record(dirs[0])["metrics"] != _record(dirs[1])["metrics"]


@pytest.mark.parametrize("every_step", [True, False], ids=["cpu-check", "gpu-check"])
def test_a_diverging_member_stops_alone_and_the_others_go_on(
    tmp_path, capsys, monkeypatch, every_step
):
    # Where checking costs a device sync (GPU), the loop checks at evaluations only.
    monkeypatch.setattr(train_module, "checks_every_step", lambda device: every_step)
    members = [*MEMBERS[:2], dict(seed=2, optimizer="sgd", lr=1e36, clip="none")]
    dirs = [tmp_path / "population" / str(k) for k in range(len(members))]
    summaries = train_population([_cfg(d, **m) for d, m in zip(dirs, members)])
    assert [s["status"] for s in summaries] == ["finished", "finished", "diverged"]
    assert summaries[2]["steps"] < 15 and not (dirs[2] / "last.pt").exists()
    assert "diverged at step" in capsys.readouterr().err
    for member, twin in zip(dirs, _lone_twins(tmp_path, members)):
        _assert_close(_record(member), _record(twin))


def test_an_interrupted_population_resumes_together_or_alone_to_the_same_results(
    tmp_path, monkeypatch
):
    straight = [tmp_path / "straight" / str(k) for k in range(len(MEMBERS))]
    train_population([_cfg(d, **m) for d, m in zip(straight, MEMBERS)])

    dirs = [tmp_path / "population" / str(k) for k in range(len(MEMBERS))]
    # 3 training minibatches a step, 3 validation ones at step 15: call 62 is in step 20
    interrupt_at(monkeypatch, call=62)
    summaries = train_population([_cfg(d, **m) for d, m in zip(dirs, MEMBERS)])
    monkeypatch.undo()
    assert [s["status"] for s in summaries] == ["interrupted"] * 3
    assert {load_checkpoint(d / "last.pt")["step"] for d in dirs} == {20}
    alone = tmp_path / "alone"
    shutil.copytree(dirs[1], alone)  # the same checkpoint, continued by train alone

    summaries = train_population(dirs)
    assert [s["status"] for s in summaries] == ["finished"] * 3
    for member, reference in zip(dirs, straight):
        _assert_close(_record(member), _record(reference))
    assert train(resume=alone, progress=False)["status"] == "finished"
    _assert_close(_record(alone), _record(straight[1]))


@pytest.mark.parametrize(
    "members, message",
    [
        (
            [dict(hidden_size=32), dict(hidden_size=16)],
            "members must share --hidden-size: member 0 has 32, member 1 has 16",
        ),
        ([dict(), dict(batch_size=10)], "members must share --batch-size"),
        ([dict(), dict(epochs=4)], "members must share --epochs"),
        ([dict(), dict(backend="reference")], "members must share --backend"),
        ([dict(), dict(track_gradients=5)], "population training does not track gradients"),
        ([dict(task="caption")], "population training takes the sequence tasks"),
        ([dict(task="caption", n_val=None)], "population training takes the sequence tasks"),
    ],
)
def test_members_that_cannot_train_together_are_refused_before_any_work(tmp_path, members, message):
    cfgs = [
        Config(**{**TINY_COPY, **m}, run_dir=str(tmp_path / str(k))) for k, m in enumerate(members)
    ]
    with pytest.raises(ConfigError) as e:
        train_population(cfgs)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not any(tmp_path.iterdir())


def test_members_at_different_steps_are_refused(tmp_path, monkeypatch):
    dirs = [tmp_path / "a", tmp_path / "b"]
    for d, call in zip(dirs, (5, 10)):  # interrupted alone, in steps 5 and 10
        interrupt_at(monkeypatch, call)
        assert train(_cfg(d), progress=False)["status"] == "interrupted"
        monkeypatch.undo()
    with pytest.raises(ConfigError, match=r"resume from the same step; they are at \[5, 10\]"):
        train_population(dirs)


SWEEP_ARGS = [
    "copy", "--T", "5", "--input-encoding", "onehot", "--hidden-size", "8", "--epochs", "2",
    "--steps-per-epoch", "20", "--eval-every", "10", "--n-train", "200", "--n-val", "100",
    "--batch-size", "20", "--grid", "p_detach=0,0.5", "--grid", "lr=1e-3,1e-2", "--threads", "1",
]  # fmt: skip


def _sweep_records(out: Path) -> dict[str, dict]:
    return {d.name: _record(d) for d in sorted(out.iterdir()) if d.is_dir()}


def _grid_runs(out: Path, epochs: int = 2) -> dict:
    """The runs of SWEEP_ARGS's grid under ``out``."""
    tiny = dict(T=5, input_encoding="onehot", hidden_size=8, epochs=epochs, steps_per_epoch=20)
    tiny.update(eval_every=10, n_train=200, n_val=100, batch_size=20)
    return Grid("copy", tiny, {"p_detach": [0.0, 0.5], "lr": [1e-3, 1e-2]}).runs(out)


def test_a_population_sweep_equals_a_local_one_and_skips_finished_runs(tmp_path, capsys):
    for cfg in _grid_runs(tmp_path / "local").values():
        run_one(cfg, 1)  # what the local engine runs in each worker
    population = tmp_path / "population"
    argv = ["sweep", *SWEEP_ARGS, "--out", str(population), "--engine", "population"]
    code, stdout, err = run_cli([*argv, "--members", "3"], capsys)
    assert code == 0 and "4 done, 0 failed" in stdout, err
    assert "populations of up to 3 runs" in stdout
    assert err.count(": best val acc") == 4  # a line per finished run
    records = _sweep_records(population)
    assert list(records) == list(_grid_runs(population))
    _assert_close(records, _sweep_records(tmp_path / "local"))
    # two populations: the first three runs, then the last alone
    logs = {name: (population / name / "train.log").read_text() for name in records}
    assert all(name in logs["p_detach=0.5,lr=0.001,seed=0"] for name in list(records)[:3])
    assert [name in logs["p_detach=0.5,lr=0.01,seed=0"] for name in records] == [0, 0, 0, 1]

    mtimes = {p: p.stat().st_mtime for p in population.rglob("summary.json")}
    code, _, err = run_cli(argv, capsys)
    assert code == 0 and "4 of 4 runs already done" in err
    assert mtimes == {p: p.stat().st_mtime for p in population.rglob("summary.json")}


def test_a_population_sweep_given_more_epochs_trains_on_as_one_started_with_them(tmp_path, capsys):
    straight = tmp_path / "straight"
    train_population(list(_grid_runs(straight, epochs=3).values()))
    out = tmp_path / "sweep"
    argv = ["sweep", *SWEEP_ARGS, "--out", str(out), "--engine", "population"]
    assert run_cli(argv, capsys)[0] == 0  # 2 epochs
    code, stdout, err = run_cli([*argv, "--epochs", "3"], capsys)
    assert code == 0 and "4 done, 0 failed" in stdout, err
    assert all("resuming" in (d / "train.log").read_text() for d in out.iterdir() if d.is_dir())
    _assert_close(_sweep_records(out), _sweep_records(straight))


def test_an_interrupted_population_sweep_resumes_to_the_same_summaries(tmp_path):
    straight = tmp_path / "straight"
    train_population(list(_grid_runs(straight, epochs=10).values()))  # what the worker runs

    out = tmp_path / "sweep"
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).parents[1] / "src"),
        "OMP_NUM_THREADS": "1",
    }
    argv = [
        sys.executable, "-m", "hdetach", "sweep", *SWEEP_ARGS, "--epochs", "10",
        "--out", str(out), "--engine", "population",
    ]  # fmt: skip
    first = out / "p_detach=0.0,lr=0.001,seed=0"
    # SIGTERM to the main process alone, as from a scheduler: the population's worker stops
    code, err, left = signal_sweep_at_checkpoint(argv, env, first / "last.pt", signal.SIGTERM)
    assert not left, f"processes left running: {left}"
    assert code == 130 and "run the same command again to continue" in err
    assert err.count(": interrupted") == 4 and not list(out.glob("*/summary.json"))

    again = subprocess.run(argv, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "resuming" in (first / "train.log").read_text()
    _assert_close(_sweep_records(out), _sweep_records(straight))


def test_the_sweep_command_refuses_what_a_population_cannot_train(tmp_path, capsys):
    out = tmp_path / "s"
    for extra, message in [
        (["--engine", "population", "--track-gradients", "5"], "does not track gradients"),
        (["--engine", "population", "--members", "0"], "--members must be >= 1"),
        (["--members", "2"], "--members is for --engine population"),
    ]:
        code, _, err = run_cli(["sweep", *SWEEP_ARGS, "--out", str(out), *extra], capsys)
        assert code == 2 and message in err and err.count("\n") == 1, err
    assert not out.exists()

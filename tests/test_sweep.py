"""hdetach sweep: grids and names, resumable and idempotent, retries, local and Ray agree."""

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_cli, signal_sweep_at_checkpoint

from hdetach.experiments.config import ConfigError
from hdetach.experiments.sweep.cli import add_parser
from hdetach.experiments.sweep.command import grid_from_args
from hdetach.experiments.sweep.grid import Grid, parse_axis, parse_seeds
from hdetach.experiments.sweep.runner import run_sweep

TINY = dict(
    T=5,
    input_encoding="onehot",
    hidden_size=8,
    epochs=2,
    steps_per_epoch=20,
    eval_every=10,
    n_train=200,
    n_val=100,
    batch_size=20,
)
TINY_ARGS = [
    "copy", "--T", "5", "--input-encoding", "onehot", "--hidden-size", "8", "--epochs", "2",
    "--steps-per-epoch", "20", "--eval-every", "10", "--n-train", "200", "--n-val", "100",
    "--batch-size", "20",
]  # fmt: skip


def _summaries(out: Path) -> dict[str, dict]:
    """Every run's summary.json under ``out`` without where it was written."""
    found = {}
    for path in sorted(out.glob("*/summary.json")):
        s = json.loads(path.read_text())
        s.pop("run_dir")
        found[path.parent.name] = s
    return found


def test_a_grid_crosses_its_values_with_every_seed_and_names_each_run(tmp_path):
    name, values = parse_axis("p-detach=0,0.25")
    grid = Grid("copy", {**TINY, "lr": "0.01"}, {name: values, "clip": ["norm", "none"]}, [0, 3])
    runs = grid.runs(tmp_path)
    assert list(runs)[:3] == [
        "p_detach=0.0,clip=norm,seed=0",
        "p_detach=0.0,clip=norm,seed=3",
        "p_detach=0.0,clip=none,seed=0",
    ]
    assert len(runs) == 8 and len({c.run_dir for c in runs.values()}) == 8
    cfg = runs["p_detach=0.25,clip=none,seed=3"]
    assert (cfg.p_detach, cfg.clip, cfg.seed, cfg.lr, cfg.hidden_size) == (0.25, "none", 3, 0.01, 8)
    assert cfg.run_dir == str(tmp_path / "p_detach=0.25,clip=none,seed=3")
    # exact values in names: two close learning rates never share a folder
    close = Grid("copy", TINY, {"lr": [0.0012345678, 0.0012345679]}).runs(tmp_path)
    assert list(close) == ["lr=0.0012345678,seed=0", "lr=0.0012345679,seed=0"]
    assert parse_seeds("3") == [0, 1, 2] and parse_seeds("0,7") == [0, 7]
    assert parse_seeds("2-2") == [2] and parse_seeds("0,3-5") == [0, 3, 4, 5]


@pytest.mark.parametrize(
    "axes, seeds, message",
    [
        ({"hidden": ["8"]}, [0], "'hidden' is not a train option"),
        ({"lr": ["fast"]}, [0], "--lr takes float values; got 'fast'"),
        ({"hidden_size": [8.5]}, [0], "--hidden-size takes int values; got 8.5"),
        ({"p_detach": [0.0, 2.0]}, [0], "--p-detach must be in [0, 1]; got 2.0"),
        ({"seed": [1, 2]}, [0], "--grid seed: cannot be crossed"),
        ({"perm_from_seed": ["yes"]}, [0], "--perm-from-seed takes true or false; got 'yes'"),
        ({"perm_from_seed": [1]}, [0], "--perm-from-seed takes true or false; got 1"),
        ({"lr": [0.1, 0.1]}, [0], "a value is repeated"),
        ({}, [1, 1], "--seeds must be distinct"),
    ],
)
def test_bad_grids_are_refused_before_any_run(tmp_path, axes, seeds, message):
    with pytest.raises(ConfigError) as e:
        Grid("copy", TINY, axes, seeds).runs(tmp_path)
    assert message in str(e.value)
    assert not any(tmp_path.iterdir())


def test_the_command_refuses_bad_input_in_one_line_before_any_work(tmp_path, capsys):
    out = tmp_path / "s"
    for argv, message in [
        ([*TINY_ARGS, "--grid", "lr=1e-3,x"], "--lr takes float values; got 'x'"),
        ([*TINY_ARGS, "--grid", "lr"], "--grid takes NAME=V1,V2,...; got 'lr'"),
        ([*TINY_ARGS, "--seeds", "two"], "--seeds takes a count, a comma list"),
        ([*TINY_ARGS, "--seeds", "1-x"], "--seeds takes a count, a comma list"),
        ([*TINY_ARGS, "--seeds", "5-3"], "--seeds: '5-3' names no seeds"),
        ([*TINY_ARGS, "--seeds", "0-2,1"], "--seeds must be distinct seeds"),
        ([*TINY_ARGS, "--seeds", "0"], "--seeds: '0' names no seeds"),
        ([*TINY_ARGS, "--seeds", "4294967296"], "names more than 10000 seeds"),
        ([*TINY_ARGS, "--seeds", "5-99999"], "names more than 10000 seeds"),
        (["speech", "--out", str(out)], "sweep needs a TASK"),
        ([*TINY_ARGS[:1], "--jobs", "0"], "--jobs must be >= 1"),
        ([*TINY_ARGS[:1], "--ray-files", "driver"], "--ray-files is for --engine ray"),
    ]:
        code, _, err = run_cli(["sweep", *argv, "--out", str(out)], capsys)
        assert code == 2 and message in err and err.count("\n") == 1, err
    assert not out.exists()


def test_a_study_file_gives_the_grid_and_the_command_line_adds_to_it(tmp_path):
    file = tmp_path / "study.toml"
    file.write_text(
        'task = "copy"\nseeds = 2\nout = "runs/x"\n[base]\nT = 5\nlr = 1\n'
        "[grid]\np_detach = [0, 0.5]\n"
    )
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    a = parser.parse_args(["sweep", str(file), "--hidden-size", "8", "--grid", "clip=none,norm"])
    grid, out = grid_from_args(a)
    assert out == Path("runs/x") and grid.seeds == [0, 1]
    assert grid.base == {"T": 5, "lr": 1.0, "hidden_size": 8}
    assert grid.axes == {"p_detach": [0.0, 0.5], "clip": ["none", "norm"]}


def test_a_sweep_folder_refuses_other_base_options_and_is_extended_by_new_values(tmp_path, capsys):
    from hdetach.experiments.sweep.grid import RECORD, check_record, write_record

    grid = Grid("copy", TINY, {"p_detach": [0.0]}, [0])
    write_record(tmp_path, grid)
    write_record(tmp_path, Grid("copy", TINY, {"p_detach": [0.5]}, [1]))
    record = json.loads((tmp_path / RECORD).read_text())
    assert record["axes"] == {"p_detach": [0.0, 0.5]} and record["seeds"] == [0, 1]
    with pytest.raises(ConfigError, match="holds a sweep with other settings .*base"):
        check_record(tmp_path, Grid("copy", {**TINY, "T": 6}, {"p_detach": [0.0]}))
    with pytest.raises(ConfigError, match="crossed options"):
        check_record(tmp_path, Grid("copy", TINY, {"lr": [0.1]}))


def test_a_run_folder_holding_another_config_is_refused_before_any_work(tmp_path, capsys):
    argv = ["sweep", *TINY_ARGS, "--grid", "p_detach=0,0.5", "--out", str(tmp_path)]
    folder = tmp_path / "p_detach=0.5,seed=0"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**TINY, "task": "copy", "T": 7}))
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and f"{folder} holds a run with T 7, not 5" in err
    assert not (tmp_path / "p_detach=0.0,seed=0").exists()


def test_a_finished_sweep_given_more_epochs_trains_its_runs_on_to_them(tmp_path, capsys):
    from hdetach.experiments.sweep.engines import run_one

    for cfg in (
        Grid("copy", {**TINY, "epochs": 3}, {"p_detach": [0.0, 0.5]})
        .runs(tmp_path / "straight")
        .values()
    ):
        run_one(cfg, 1)
    out = tmp_path / "sweep"
    argv = ["sweep", *TINY_ARGS, "--grid", "p_detach=0,0.5", "--out", str(out), "--threads", "1"]
    assert run_cli(argv, capsys)[0] == 0  # 2 epochs
    code, _, err = run_cli([*argv, "--epochs", "3"], capsys)
    assert code == 0 and "runs already done" not in err, err
    assert _summaries(out) == _summaries(tmp_path / "straight")
    assert json.loads((out / "sweep.json").read_text())["base"]["epochs"] == 3
    # a length left out is not a request for the task's default length
    code, _, err = run_cli([a for a in argv if a not in ("--epochs", "2")], capsys)
    assert code == 2 and "holds a sweep with other settings" in err, err
    # nor can a run be made shorter than it has trained
    code, _, err = run_cli([*argv, "--epochs", "1"], capsys)
    assert code == 2 and "holds a run with epochs 3, not 1" in err, err
    code, _, err = run_cli([*argv, "--epochs", "3"], capsys)
    assert code == 0 and "2 of 2 runs already done" in err, err


def test_a_sweep_of_annealing_runs_reruns_without_a_length_change(tmp_path, capsys):
    """Annealing runs cannot change length; a rerun at the same length is not a change."""
    out = tmp_path / "sweep"
    argv = [
        "sweep", *TINY_ARGS, "--anneal-epochs", "1", "--grid", "p_detach=0.5", "--out",
        str(out), "--threads", "1",
    ]  # fmt: skip
    assert run_cli(argv, capsys)[0] == 0
    code, _, err = run_cli(argv, capsys)
    assert code == 0 and "1 of 1 runs already done" in err, err
    code, _, err = run_cli([*argv, "--epochs", "3"], capsys)
    assert code == 2 and "anneals h-detach over its last 1 epochs" in err, err


def test_a_finished_run_whose_config_cannot_be_read_is_never_trained_again(tmp_path):
    from hdetach.experiments.sweep.engines import plan

    (tmp_path / "summary.json").write_text('{"status": "finished"}')
    (tmp_path / "last.pt").write_bytes(b"")
    assert plan(tmp_path, epochs=5) == "done"  # no config.json: no guess at its length
    (tmp_path / "config.json").write_text('{"epochs": 3}')
    assert plan(tmp_path, epochs=5) == "resume" and plan(tmp_path, epochs=3) == "done"


def _sweep_cmd(out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "hdetach", "sweep", *TINY_ARGS, "--epochs", "10",
        "--grid", "p_detach=0,0.5", "--out", str(out), "--jobs", "1", "--threads", "1", *extra,
    ]  # fmt: skip


def _env() -> dict[str, str]:
    src = str(Path(__file__).parents[1] / "src")
    return {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def straight_sweep(tmp_path_factory) -> dict[str, dict]:
    """The summaries of the test sweep run without interruption."""
    out = tmp_path_factory.mktemp("straight") / "sweep"
    subprocess.run(_sweep_cmd(out), env=_env(), check=True, capture_output=True)
    return _summaries(out)


STOPS = [signal.SIGKILL, signal.SIGINT, signal.SIGTERM]


@pytest.mark.parametrize("sig", STOPS, ids=["killed", "ctrl-c", "sigterm"])
def test_an_interrupted_sweep_resumes_to_the_summaries_of_an_uninterrupted_one(
    tmp_path, straight_sweep, sig
):
    # The sweep's main process alone gets the signal, as from a scheduler, while the
    # second run is midway: its worker stops too, at a step boundary with a checkpoint
    # (killed: once it finds its driver gone), and no process is left behind.
    out = tmp_path / "sweep"
    second = out / "p_detach=0.5,seed=0"
    code, err, left = signal_sweep_at_checkpoint(_sweep_cmd(out), _env(), second / "last.pt", sig)
    assert not left, f"processes left running: {left}"
    if sig != signal.SIGKILL:  # a clean stop: the sweep says how to go on
        assert code == 130 and "run the same command again to continue" in err
        assert "p_detach=0.5,seed=0: interrupted" in err
    assert (out / "p_detach=0.0,seed=0" / "summary.json").is_file()
    assert (second / "last.pt").is_file() and not (second / "summary.json").exists()
    assert "stopped at step" in (second / "train.log").read_text()  # not at an evaluation

    again = subprocess.run(_sweep_cmd(out), env=_env(), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "1 of 2 runs already done" in again.stderr
    assert "resuming" in (second / "train.log").read_text()
    assert _summaries(out) == straight_sweep and len(straight_sweep) == 2
    if sig != signal.SIGINT:
        return
    # idempotent: nothing left to do, nothing rerun
    mtimes = {p: p.stat().st_mtime for p in out.rglob("summary.json")}
    third = subprocess.run(_sweep_cmd(out), env=_env(), capture_output=True, text=True)
    assert third.returncode == 0 and "2 of 2 runs already done" in third.stderr
    assert mtimes == {p: p.stat().st_mtime for p in out.rglob("summary.json")}


def test_a_ray_sweep_stops_on_sigterm_to_its_driver_and_resumes_exactly(tmp_path, straight_sweep):
    pytest.importorskip("ray")
    out = tmp_path / "sweep"
    argv = _sweep_cmd(out, "--engine", "ray")  # a local Ray, started by the sweep
    first = out / "p_detach=0.0,seed=0"
    code, err, left = signal_sweep_at_checkpoint(argv, _env(), first / "last.pt", signal.SIGTERM)
    assert not left, f"processes left running: {left}"
    assert code == 130 and "run the same command again to continue" in err
    assert "p_detach=0.0,seed=0: interrupted" in err
    assert "stopped at step" in (first / "train.log").read_text()
    assert not (first / "summary.json").exists()

    again = subprocess.run(argv, env=_env(), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "resuming" in (first / "train.log").read_text()
    assert _summaries(out) == straight_sweep


def test_a_second_signal_aborts_runs_that_do_not_stop(tmp_path):
    # Runs that never reach a step boundary: the first SIGTERM waits for them, the
    # second ends the sweep at once, workers and all.
    out = tmp_path / "sweep"
    script = (
        "import sys; from pathlib import Path; from sweep_fns import ignores_stops; "
        "from hdetach.experiments.sweep.grid import Grid; "
        "from hdetach.experiments.sweep.runner import run_sweep; "
        f"runs = Grid('copy', {TINY!r}, {{}}, [0, 1]).runs(Path(sys.argv[1])); "
        "run_sweep(runs, jobs=2, fn=ignores_stops, progress=False)"
    )
    env = {
        **_env(),
        "PYTHONPATH": os.pathsep.join([_env()["PYTHONPATH"], str(Path(__file__).parent)]),
    }
    argv = [sys.executable, "-c", script, str(out)]
    code, err, left = signal_sweep_at_checkpoint(
        argv, env, out / "seed=1.started", [signal.SIGTERM, signal.SIGTERM], within=10
    )
    assert not left, f"processes left running: {left}"
    assert code == -signal.SIGINT and "KeyboardInterrupt" in err  # as a second Ctrl-C
    assert "SIGTERM: no new runs; running ones checkpoint and stop" in err


def test_failed_runs_are_retried_and_then_reported(tmp_path):
    from sweep_fns import fails_first_attempt

    runs = Grid("copy", TINY, {"p_detach": [0.0, 0.5]}).runs(tmp_path)
    # a transient failure: the retry trains the run
    result = run_sweep(runs, jobs=2, retries=1, progress=False, fn=fails_first_attempt)
    assert set(result.summaries) == set(runs) and not result.failed
    assert all(Path(c.run_dir + ".attempted").exists() for c in runs.values())

    # a damaged checkpoint fails every attempt: reported, the other run is unaffected
    runs = Grid("copy", TINY, {"p_detach": [0.0, 0.5]}, [1]).runs(tmp_path)
    broken = Path(runs["p_detach=0.5,seed=1"].run_dir)
    broken.mkdir()
    (broken / "last.pt").write_bytes(b"not a checkpoint")
    result = run_sweep(runs, jobs=1, retries=2, progress=False)
    assert list(result.summaries) == ["p_detach=0.0,seed=1"]
    assert list(result.failed) == ["p_detach=0.5,seed=1"]
    assert "CheckpointError" in result.failed["p_detach=0.5,seed=1"]
    assert (broken / "train.log").read_text().count("resuming") == 0  # it never loaded


def test_a_diverged_run_is_a_result_not_a_failure(tmp_path):
    cfg = {**TINY, "optimizer": "sgd", "lr": 1e36, "clip": "none"}
    runs = Grid("copy", cfg, {}, [0]).runs(tmp_path)
    result = run_sweep(runs, progress=False)
    (summary,) = result.summaries.values()
    assert summary["status"] == "diverged" and not result.failed
    again = run_sweep(runs, progress=False)  # not rerun
    assert again.summaries == result.summaries


def test_the_local_and_ray_engines_give_identical_summaries(tmp_path):
    ray = pytest.importorskip("ray")
    runs = {
        engine: Grid("copy", TINY, {"p_detach": [0.0, 0.5]}, [0, 1]).runs(tmp_path / engine)
        for engine in ("local", "ray")
    }
    runs["shipped"] = Grid("copy", TINY, {"p_detach": [0.0, 0.5]}, [0, 1]).runs(tmp_path / "s")
    local = run_sweep(runs["local"], "local", jobs=2, progress=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = run_sweep(runs["ray"], "ray", progress=False)
        # the run folders on the driver's disk alone, shipped to the workers and back
        shipped = run_sweep(runs["shipped"], "ray", progress=False, ship=True)
    finally:
        ray.shutdown()
    assert len(local.summaries) == 4 and not local.failed and not remote.failed
    assert _summaries(tmp_path / "local") == _summaries(tmp_path / "ray")
    assert _summaries(tmp_path / "local") == _summaries(tmp_path / "s")
    for result in (remote, shipped):
        assert {k: s["best_val"] for k, s in result.summaries.items()} == {
            k: s["best_val"] for k, s in local.summaries.items()
        }
    for name, cfg in runs["shipped"].items():
        assert shipped.summaries[name]["run_dir"] == cfg.run_dir
        assert (Path(cfg.run_dir) / "last.pt").is_file()


def test_a_shipped_run_resumes_from_the_folder_the_driver_received(tmp_path, monkeypatch):
    # --ray-files driver, without Ray: a worker trains in a folder of its own; the driver
    # keeps what comes back, and a later attempt resumes from it.
    from helpers import interrupt_at

    from hdetach.experiments.sweep.engines import attempt_shipped, pack, receive, run_one

    runs = {
        where: Grid("copy", TINY, {}, [0]).runs(tmp_path / where) for where in ("here", "shipped")
    }
    (straight,) = [run_one(cfg, 1) for cfg in runs["here"].values()]
    ((name, cfg),) = runs["shipped"].items()
    interrupt_at(monkeypatch, call=25)
    outcome = receive(cfg, *attempt_shipped(run_one, name, cfg, 1, None))
    monkeypatch.undo()
    run_dir = Path(cfg.run_dir)
    assert outcome[1]["status"] == "interrupted" and (run_dir / "last.pt").is_file()
    assert not (run_dir / "summary.json").exists()
    _, summary, error = receive(cfg, *attempt_shipped(run_one, name, cfg, 1, pack(run_dir)))
    assert error is None and "resuming" in (run_dir / "train.log").read_text()
    assert summary["run_dir"] == cfg.run_dir
    assert json.loads((run_dir / "config.json").read_text())["run_dir"] == cfg.run_dir
    assert {k: v for k, v in summary.items() if k != "run_dir"} == {
        k: v for k, v in straight.items() if k != "run_dir"
    }
    assert _summaries(tmp_path / "shipped") == _summaries(tmp_path / "here")


def test_threads_beyond_the_free_cores_are_warned_about(monkeypatch):
    from hdetach.experiments.sweep import engines

    monkeypatch.setattr(engines, "cores", lambda: 2)
    monkeypatch.setattr(engines.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert engines.oversubscription(jobs=2, threads=1) is None
    assert engines.oversubscription(jobs=1, threads=2) is None
    assert "2 runs x 2 threads = 4 threads on 2 cores" in engines.oversubscription(2, 2)
    monkeypatch.setattr(engines.os, "getloadavg", lambda: (1.2, 0.0, 0.0))  # a core busy
    assert "about 1 busy" in engines.oversubscription(jobs=1, threads=2)
    assert engines.oversubscription(jobs=4, threads=1) is None  # one thread each: by turns


def test_a_run_saved_before_an_option_existed_is_still_its_own_run(tmp_path):
    """A config.json written before --perm-from-seed and perm_checksum were recorded
    matches the run it was (the option at its default, the checksum not compared), and a
    real difference in an option that predates it is still refused."""
    from hdetach.experiments.sweep.grid import check_existing

    grid = Grid("pmnist", {"n_train": 10, "n_val": 10, "data_dir": "unused"}, {"p_detach": [0.0]})
    (cfg,) = grid.runs(tmp_path).values()
    folder = Path(cfg.run_dir)
    folder.mkdir(parents=True)
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("perm_from_seed", "perm_checksum")}
    (folder / "config.json").write_text(json.dumps(old))
    check_existing({"run": cfg})
    (folder / "config.json").write_text(json.dumps({**old, "perm_seed": 1}))
    with pytest.raises(ConfigError, match="holds a run with perm_seed 1, not 0"):
        check_existing({"run": cfg})


def test_a_switch_is_a_sweep_option_given_or_crossed(tmp_path):
    """A bool option (--perm-from-seed) set by the sweep's own flag, a --grid axis, or TOML."""
    from hdetach.experiments.sweep.grid import parse_value

    assert parse_value("perm_from_seed", "true") is True
    assert parse_value("perm_from_seed", "False") is False
    assert parse_value("perm_from_seed", True) is True
    base = {"n_train": 10, "n_val": 10, "data_dir": "unused"}
    runs = Grid("pmnist", base, {"perm_from_seed": [False, True]}, [3]).runs(tmp_path)
    assert {name: cfg.perm_seed for name, cfg in runs.items()} == {
        "perm_from_seed=False,seed=3": 0,
        "perm_from_seed=True,seed=3": 3,
    }

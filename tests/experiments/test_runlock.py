"""One process at a time trains a run folder: a second trainer is refused before it
touches the folder, a sweep leaves such runs to their process, and a killed process
leaves no lock behind."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest
from helpers import TINY_COPY, run_cli

from hdetach.experiments.config import Config, ConfigError
from hdetach.experiments.run import folder as run_folder
from hdetach.experiments.run.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from hdetach.experiments.run.folder import RunFolder
from hdetach.experiments.train.loop import train
from hdetach.experiments.train.population import train_population

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(run_folder.fcntl is None, reason="no fcntl (flock) on this system"),
]

SHORT = {**TINY_COPY, "epochs": 1}


def test_a_run_being_trained_is_not_resumed_by_a_second_trainer(tmp_path):
    run = tmp_path / "run"
    train(Config(**SHORT, max_steps=10, run_dir=str(run)), progress=False)
    metrics = (run / "metrics.jsonl").read_text()
    held = RunFolder(run).lock()  # another trainer (its own open file: flock treats it as such)
    assert RunFolder(run).holder() == str(os.getpid())
    with pytest.raises(ConfigError, match=f"{run} is being trained by another process"):
        train(resume=run, progress=False)
    assert (run / "metrics.jsonl").read_text() == metrics  # not truncated, not appended
    held.close()
    assert RunFolder(run).holder() is None
    assert train(resume=run, progress=False)["status"] == "finished"
    assert RunFolder(run).holder() is None  # let go when training ends


def test_a_fresh_run_in_a_folder_being_set_up_is_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    held = RunFolder(run).lock()
    with pytest.raises(ConfigError, match="being trained by another process"):
        train(Config(**SHORT, run_dir=str(run)), progress=False)
    assert not (run / "config.json").exists()
    held.close()


def test_a_population_refused_for_one_member_lets_go_of_the_others(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    for seed, run in enumerate((first, second)):
        train(Config(**SHORT, seed=seed, max_steps=10, run_dir=str(run)), progress=False)
    held = RunFolder(second).lock()
    with pytest.raises(ConfigError, match=f"{second} is being trained") as refused:
        train_population([first, second])
    # the refusal's traceback, which still holds the first member's run, is alive here
    assert refused.traceback is not None
    assert RunFolder(first).holder() is None
    held.close()


def test_a_run_whose_checkpoint_does_not_fit_leaves_no_lock(tmp_path):
    run = tmp_path / "run"
    train(Config(**SHORT, max_steps=10, run_dir=str(run)), progress=False)
    ckpt = load_checkpoint(run / "last.pt")
    ckpt["model"] = {name: w[:1] for name, w in ckpt["model"].items()}  # wrong shapes
    save_checkpoint(ckpt, run / "last.pt")
    with pytest.raises(CheckpointError, match="does not fit its own config") as refused:
        train(resume=run, progress=False)
    assert refused.traceback is not None
    assert RunFolder(run).holder() is None


def test_a_sweep_leaves_a_run_in_training_to_its_process(tmp_path, capsys):
    out = tmp_path / "s"
    argv = [
        "sweep", "copy", "--T", "5", "--input-encoding", "onehot", "--hidden-size", "8",
        "--epochs", "1", "--steps-per-epoch", "10", "--n-train", "100", "--n-val", "50",
        "--batch-size", "10", "--seeds", "2", "--jobs", "1", "--threads", "1",
        "--no-progress", "--out", str(out),
    ]  # fmt: skip
    (out / "seed=1").mkdir(parents=True)
    held = RunFolder(out / "seed=1").lock()
    code, stdout, err = run_cli(argv, capsys)
    assert code == 1, err
    assert f"seed=1: being trained by another process (pid {os.getpid()}); left to it" in err
    assert "1 done, 0 failed, 0 interrupted, 1 training elsewhere of 2" in stdout
    assert (out / "seed=0" / "summary.json").is_file()
    assert sorted(p.name for p in (out / "seed=1").iterdir()) == ["train.lock"]
    held.close()
    code, stdout, err = run_cli(argv, capsys)
    assert code == 0 and "2 done, 0 failed, 0 interrupted of 2" in stdout, err


def test_a_killed_trainer_leaves_no_lock(tmp_path):
    holding = textwrap.dedent(
        f"""
        import sys, time
        from hdetach.experiments.run.folder import RunFolder
        lock = RunFolder({str(tmp_path)!r}).lock()
        print("locked", flush=True)
        time.sleep(60)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", holding], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        assert RunFolder(tmp_path).holder() == str(child.pid)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        child.kill()
    assert RunFolder(tmp_path).holder() is None
    RunFolder(tmp_path).lock().close()  # and it can be taken again

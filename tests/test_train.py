import json
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import TINY_COPY

from hdetach.experiments.run.session import Sampler
from hdetach.experiments.tasks import copying
from hdetach.experiments.train import loop as train_module
from hdetach.experiments.train.loop import (
    Config,
    ConfigError,
    load_checkpoint,
    p_at_epoch,
    resolve,
    rng_state,
    set_rng_state,
    train,
)

TINY = TINY_COPY


pytestmark = pytest.mark.usefixtures("one_thread")


def _metrics(run_dir):
    """metrics.jsonl without the wall-clock fields, which legitimately differ."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k != "time"} for x in lines]


def test_short_copy_run_learns_well_above_chance(trained_copy_run):
    # The shortest gap (T=1) with one-hot input leaves the plateau within ~500 steps;
    # chance on the copied symbols is 1/8.
    _, summary = trained_copy_run
    assert summary["best_val"] > 0.5, summary
    assert summary["test_at_best"]["acc"] > 0.5


def test_run_dir_contents(tmp_path):
    run = tmp_path / "run"
    summary = train(Config(**TINY, run_dir=str(run)), progress=False)
    assert summary["status"] == "finished"
    for name in ("config.json", "metrics.jsonl", "best.pt", "last.pt", "summary.json"):
        assert (run / name).is_file(), name
    assert list((run / "tb").glob("events.out.tfevents.*"))
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["hidden_size"] == 32 and cfg["total_steps"] == 60 and cfg["device"] == "cpu"
    records = _metrics(run)
    assert [r["step"] for r in records] == [15, 30, 45, 60]
    best = max(r["val"]["acc"] for r in records)
    assert summary["best_val"] == best == records[-1]["best"]["value"]
    # plain state dicts, loadable without unpickling arbitrary objects
    ck = load_checkpoint(run / "last.pt")
    assert ck["step"] == 60 and set(ck["model"]) >= {"lstm.weight_hh_l0", "head.weight"}
    with pytest.raises(ConfigError, match="already holds a run"):
        train(Config(**TINY, run_dir=str(run)), progress=False)


def test_same_seed_same_numbers_different_seed_different(tmp_path):
    a = train(Config(**TINY, run_dir=str(tmp_path / "a")), progress=False)
    b = train(Config(**TINY, run_dir=str(tmp_path / "b")), progress=False)
    train(Config(**TINY, seed=1, run_dir=str(tmp_path / "c")), progress=False)
    assert _metrics(tmp_path / "a") == _metrics(tmp_path / "b")
    assert a["test_at_best"] == b["test_at_best"]
    assert _metrics(tmp_path / "a") != _metrics(tmp_path / "c")


@pytest.mark.parametrize("stop_at_call", [7, 33])  # mid eval interval; right after an eval
def test_resume_after_ctrl_c_equals_uninterrupted_run(tmp_path, monkeypatch, stop_at_call):
    full = train(Config(**TINY, anneal_epochs=1, run_dir=str(tmp_path / "full")), progress=False)

    # Deliver a real SIGINT while the loop fetches a batch: the handler must let the step
    # finish and leave a consistent checkpoint.
    original, calls = copying.CopyingTask.batch, [0]

    def interrupting_batch(self, split, idx):
        calls[0] += 1
        if calls[0] == stop_at_call:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, split, idx)

    monkeypatch.setattr(copying.CopyingTask, "batch", interrupting_batch)
    part = train(Config(**TINY, anneal_epochs=1, run_dir=str(tmp_path / "part")), progress=False)
    assert part["status"] == "interrupted" and 0 < part["step"] < 60
    assert load_checkpoint(tmp_path / "part" / "last.pt")["step"] == part["step"]
    monkeypatch.setattr(copying.CopyingTask, "batch", original)

    resumed = train(resume=tmp_path / "part", progress=False)
    assert _metrics(tmp_path / "part") == _metrics(tmp_path / "full")
    drop = {"run_dir"}
    assert {k: v for k, v in resumed.items() if k not in drop} == {
        k: v for k, v in full.items() if k not in drop
    }
    w_full = load_checkpoint(tmp_path / "full" / "last.pt")["model"]
    w_res = load_checkpoint(tmp_path / "part" / "last.pt")["model"]
    assert all(torch.equal(w_full[k], w_res[k]) for k in w_full)


@pytest.mark.parametrize("minutes, kept", [("1e-9", 18), ("10", 15), ("0", 15)])
def test_a_run_killed_between_evaluations_resumes_from_its_timed_checkpoint(
    tmp_path, monkeypatch, minutes, kept
):
    # A crash (no stop, no handler) in step 19 (the 20th batch drawn: one went to the
    # evaluation at step 15; they come at 15, 30, ...). With a checkpoint at least every
    # 1e-9 minutes (each step) last.pt holds step 18; with 10
    # minutes, or none (0), the evaluation's at 15. Either way the resumed run ends exactly
    # as the uninterrupted one.
    monkeypatch.setenv("HDETACH_CHECKPOINT_MINUTES", minutes)
    full = train(Config(**TINY, run_dir=str(tmp_path / "full")), progress=False)
    original, calls = copying.CopyingTask.batch, [0]

    def crashing_batch(self, split, idx):
        calls[0] += 1
        if calls[0] == 20:
            raise RuntimeError("the machine went away")
        return original(self, split, idx)

    monkeypatch.setattr(copying.CopyingTask, "batch", crashing_batch)
    with pytest.raises(RuntimeError, match="went away"):
        train(Config(**TINY, run_dir=str(tmp_path / "part")), progress=False)
    assert load_checkpoint(tmp_path / "part" / "last.pt")["step"] == kept
    monkeypatch.setattr(copying.CopyingTask, "batch", original)
    resumed = train(resume=tmp_path / "part", progress=False)
    assert _metrics(tmp_path / "part") == _metrics(tmp_path / "full")
    assert resumed["test_at_best"] == full["test_at_best"]


def test_timed_checkpoints_count_their_minutes_from_the_last_save(tmp_path, monkeypatch):
    # A clock that advances one minute per training batch, and an interval of 4 minutes:
    # timed saves come every 4 steps, and an evaluation's save (every 15 steps) restarts
    # the count, so no timed save follows an evaluation's by less than the interval.
    minutes = [0]
    original_batch = copying.CopyingTask.batch

    def timed_batch(self, split, idx):
        minutes[0] += split == "train"
        return original_batch(self, split, idx)

    saved_steps, original_save = [], train_module.save_checkpoint

    def recording_save(state, path):
        if path.name == "last.pt":
            saved_steps.append(state["step"])
        original_save(state, path)

    monkeypatch.setenv("HDETACH_CHECKPOINT_MINUTES", "4")
    monkeypatch.setattr(copying.CopyingTask, "batch", timed_batch)
    monkeypatch.setattr(train_module, "time", SimpleNamespace(monotonic=lambda: 60.0 * minutes[0]))
    monkeypatch.setattr(train_module, "save_checkpoint", recording_save)
    train(Config(**TINY, run_dir=str(tmp_path / "run")), progress=False)
    timed = [4, 8, 12, 15, 19, 23, 27, 30, 34, 38, 42, 45, 49, 53, 57, 60]
    assert TINY["epochs"] * TINY["steps_per_epoch"] == 60 and TINY["eval_every"] == 15
    assert saved_steps == timed


@pytest.mark.parametrize("value", ["soon", "-1", "inf", "nan"])
def test_a_bad_checkpoint_interval_is_refused_before_any_work(tmp_path, monkeypatch, value):
    monkeypatch.setenv("HDETACH_CHECKPOINT_MINUTES", value)
    with pytest.raises(ConfigError, match="HDETACH_CHECKPOINT_MINUTES must be a number"):
        train(Config(**TINY, run_dir=str(tmp_path / "run")), progress=False)
    assert not (tmp_path / "run").exists()


def test_rng_state_roundtrip():
    import random

    import numpy as np

    s = rng_state()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(s)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


def test_sampler_epoch_without_replacement_and_state():
    s = Sampler(10, 4, with_replacement=False, gen=torch.Generator().manual_seed(0))
    epoch = torch.cat([s.next() for _ in range(3)])
    assert sorted(epoch.tolist()) == list(range(10))  # each example once per epoch
    # Saved at an epoch's end, then 4 minibatches later in the middle of the next epoch.
    for where in ("at an epoch's end", "mid-epoch"):
        state = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in s.state_dict().items()}
        ahead = [s.next() for _ in range(4)]
        s.load_state_dict(state)
        assert all(torch.equal(a, s.next()) for a in ahead), where
    r = Sampler(10, 1000, with_replacement=True, gen=torch.Generator().manual_seed(0)).next()
    assert r.shape == (1000,) and r.min() == 0 and r.max() == 9


def test_annealing_switches_h_detach_off_for_last_epochs():
    cfg = resolve(Config(task="copy", epochs=10, anneal_epochs=3, p_detach=0.5))
    assert [p_at_epoch(cfg, e) for e in range(10)] == [0.5] * 7 + [0.0] * 3


def _readme_protocol(task: str) -> str:
    """The documented protocol bullet of a task (docs/experiments.md), on one line."""
    text = (Path(__file__).parents[1] / "docs" / "experiments.md").read_text()
    return " ".join(text.split(f"- **{task}**", 1)[1].split("\n- ", 1)[0].split())


def _sci(x: float) -> str:
    return f"{x:.0e}".replace("e-0", "e-")  # 0.001 -> "1e-3", as the README writes it


def test_task_defaults_are_the_protocols_the_readme_documents():
    c = resolve(Config(task="copy"))
    copy = _readme_protocol("copy")
    for phrase in (
        f"Hidden {c.hidden_size}, batch {c.batch_size}",
        f"{c.optimizer.capitalize()} {_sci(c.lr)}, clip-{c.clip} {c.clip_value}",
        f"{c.n_train // 1000}k fixed training sequences",
        f"an epoch is {c.steps_per_epoch} minibatches",
        f"{c.n_val} fixed validation sequences",
        f"`--input-encoding {c.input_encoding}` (default",
    ):
        assert phrase in copy, phrase
    m = resolve(Config(task="mnist", data_dir="x"))
    mnist = _readme_protocol("mnist / pmnist")
    for phrase in (
        f"Hidden {m.hidden_size}, batch {m.batch_size}, {m.epochs} epochs, p = {m.p_detach:g}",
        f"first {m.n_train // 1000}k training images train, last {m.n_val // 1000}k validate",
        f"official {m.n_test // 1000}k",
    ):
        assert phrase in mnist, phrase


@pytest.mark.parametrize("batch_size", [100, 64, 7])
def test_an_mnist_epoch_is_one_pass_over_the_training_images(batch_size):
    m = resolve(Config(task="pmnist", data_dir="x", n_train=1000, batch_size=batch_size))
    assert (m.steps_per_epoch - 1) * batch_size < m.n_train <= m.steps_per_epoch * batch_size
    assert m.total_steps == m.epochs * m.steps_per_epoch and m.eval_every == m.steps_per_epoch


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(p_detach=1.5), "--p-detach must be in"),
        (dict(task="cifar"), "--task must be one of"),
        (dict(clip="max"), "--clip must be one of"),
        (dict(lr=0.0), "--lr must be finite and > 0"),
        (dict(hidden_size=-3), "--hidden-size must be finite and > 0"),
        (dict(epochs=5, anneal_epochs=5), "--anneal-epochs must be <"),
        (dict(task="mnist", T=100), "--T is fixed at 784"),
        (dict(task="mnist", n_train=60_000), "at most --n-train 50000"),
        (dict(device="tpu"), "--device must be"),
        (dict(device="cpux"), "--device must be auto, cpu or cuda"),
        (dict(lr=float("inf")), "--lr must be finite and > 0; got inf"),
        (dict(lr=float("nan")), "--lr must be finite and > 0; got nan"),
        (dict(clip_value=float("inf")), "--clip-value must be finite and > 0"),
        (dict(p_detach=float("nan")), "--p-detach must be in"),
        (dict(layer_masks="own"), "--layer-masks must be one of shared, independent"),
        (dict(backend="native", p_detach=0.25), "--backend native needs --p-detach 0"),
    ],
)
def test_bad_config_is_rejected_before_any_work(bad, match):
    with pytest.raises(ConfigError, match=match):
        resolve(Config(**bad))


def test_adding_task_trains_and_selects_on_lowest_mse(tmp_path):
    s = train(
        Config(
            task="adding",
            T=10,
            hidden_size=16,
            epochs=2,
            steps_per_epoch=10,
            n_train=200,
            n_val=100,
            batch_size=20,
            run_dir=str(tmp_path / "r"),
        ),
        progress=False,
    )
    records = _metrics(tmp_path / "r")
    assert s["metric"] == "mse" and s["best_val"] == min(r["val"]["mse"] for r in records)


def test_split_sizes_follow_the_config():
    from hdetach.experiments.tasks.registry import make_task

    for task in ("copy", "adding"):
        t = make_task(resolve(Config(task=task, T=3, n_train=30, n_val=20, n_test=10)))
        assert [t.size(s) for s in ("train", "val", "test")] == [30, 20, 10]
        assert resolve(Config(task=task, n_val=20)).n_test == 20  # default: as many as val


# Evaluations once per epoch, as by default: the shorter run's end is one in both runs.
PER_EPOCH = {**TINY, "eval_every": TINY["steps_per_epoch"]}


def _same_run(a: Path, b: Path, summary_a: dict, summary_b: dict) -> None:
    assert _metrics(a) == _metrics(b)
    drop = {"run_dir"}
    assert {k: v for k, v in summary_a.items() if k not in drop} == {
        k: v for k, v in summary_b.items() if k not in drop
    }
    w_a, w_b = (load_checkpoint(d / "last.pt")["model"] for d in (a, b))
    assert all(torch.equal(w_a[k], w_b[k]) for k in w_a)


def test_a_finished_run_trained_on_to_more_epochs_equals_one_started_with_them(tmp_path):
    straight = train(Config(**PER_EPOCH, run_dir=str(tmp_path / "straight")), progress=False)
    short = tmp_path / "short"
    first = train(Config(**{**PER_EPOCH, "epochs": 2}, run_dir=str(short)), progress=False)
    assert first["status"] == "finished" and first["steps"] == 40
    longer = train(resume=short, progress=False, epochs=3)
    _same_run(short, tmp_path / "straight", longer, straight)
    saved = json.loads((short / "config.json").read_text())
    assert saved["epochs"] == 3 and saved["total_steps"] == 60
    assert json.loads((short / "summary.json").read_text())["steps"] == 60


def test_a_lengthened_run_interrupted_resumes_to_the_new_length(tmp_path, monkeypatch):
    from helpers import interrupt_at

    straight = train(Config(**PER_EPOCH, run_dir=str(tmp_path / "straight")), progress=False)
    short = tmp_path / "short"
    train(Config(**{**PER_EPOCH, "epochs": 2}, run_dir=str(short)), progress=False)
    interrupt_at(monkeypatch, 5)  # the fifth minibatch of the extension
    part = train(resume=short, progress=False, epochs=3)
    assert part["status"] == "interrupted" and 40 < part["step"] < 60
    assert not (short / "summary.json").exists()  # no longer a finished run
    monkeypatch.undo()
    resumed = train(resume=short, progress=False)  # the new length was saved with it
    _same_run(short, tmp_path / "straight", resumed, straight)


def test_an_mnist_run_interrupted_mid_epoch_resumes_as_if_never_stopped(tmp_path, monkeypatch):
    """MNIST is sampled without replacement: the resumed run goes on from the saved place in
    the epoch's shuffle (the copying task samples with replacement, where it has none)."""
    from helpers import interrupt_at, use_fake_mnist

    from hdetach.experiments.tasks import mnist

    use_fake_mnist(monkeypatch, 12)
    options = dict(
        task="mnist", data_dir="unused", hidden_size=8, epochs=2, batch_size=5,
        n_train=12, n_val=12, n_test=12,
    )  # fmt: skip
    straight = train(Config(**options, run_dir=str(tmp_path / "straight")), progress=False)
    assert straight["steps"] == 6  # two epochs of three minibatches: 5, 5 and 2 images
    unpatched = mnist.MNISTTask.batch
    interrupt_at(monkeypatch, 2, mnist.MNISTTask)  # the first epoch's second minibatch
    stopped = tmp_path / "stopped"
    part = train(Config(**options, run_dir=str(stopped)), progress=False)
    assert part["status"] == "interrupted" and part["step"] == 2
    monkeypatch.setattr(mnist.MNISTTask, "batch", unpatched)
    resumed = train(resume=stopped, progress=False)
    _same_run(stopped, tmp_path / "straight", resumed, straight)


def test_a_length_that_cannot_be_had_is_refused_before_any_work(tmp_path, capsys):
    from helpers import run_cli

    run = tmp_path / "run"
    train(Config(**{**PER_EPOCH, "epochs": 2}, run_dir=str(run)), progress=False)
    before = (run / "last.pt").stat().st_mtime_ns
    capsys.readouterr()
    for argv, message in [
        (["--epochs", "1"], "--epochs 1: the run has already trained 40 steps (2 epochs of 20)"),
        (["--epochs", "3", "--lr", "0.1"], "--resume takes the saved config; drop --lr"),
    ]:
        code, _, err = run_cli(["train", "--resume", str(run), *argv], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    annealed = tmp_path / "annealed"
    train(Config(**PER_EPOCH, anneal_epochs=1, run_dir=str(annealed)), progress=False)
    capsys.readouterr()
    code, _, err = run_cli(["train", "--resume", str(annealed), "--epochs", "4"], capsys)
    assert code == 2 and "switches h-detach off for its last 1 epochs" in err, err
    assert (run / "last.pt").stat().st_mtime_ns == before
    code, _, err = run_cli(["train", "--resume", str(run), "--epochs", "3"], capsys)
    assert code == 0 and json.loads((run / "summary.json").read_text())["steps"] == 60, err

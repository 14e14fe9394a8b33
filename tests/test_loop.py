"""What the training loop does to the model: schedule, selection, clipping, optimizer,
data order, throughput, device syncs, and stopping on non-finite values."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from helpers import TINY_COPY

import hdetach
from hdetach.experiments.run import log as runlog
from hdetach.experiments.run.session import DivergenceWatch, train_sampler
from hdetach.experiments.tasks import copying
from hdetach.experiments.tasks.registry import make_task
from hdetach.experiments.train import loop as train_module
from hdetach.experiments.train.loop import Config, evaluate, load_checkpoint, resolve, train

TINY = {**TINY_COPY, "hidden_size": 16}


pytestmark = pytest.mark.usefixtures("one_thread")


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity, which standard JSON does not have."""

    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_annealing_turns_h_detach_off_in_the_model_for_the_last_epochs(tmp_path, monkeypatch):
    seen = []
    forward = hdetach.LSTM.forward

    def spy(self, *args, **kwargs):
        if self.training:
            seen.append(self.p_detach)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(hdetach.LSTM, "forward", spy)
    cfg = Config(**{**TINY, "p_detach": 0.5, "anneal_epochs": 1}, run_dir=str(tmp_path / "r"))
    train(cfg, progress=False)
    assert seen == [0.5] * 40 + [0.0] * 20  # 3 epochs of 20 steps, the last without h-detach


def test_summary_tests_the_best_validation_model_not_the_last(tmp_path, monkeypatch):
    # Validation accuracy scripted to fall after the first evaluation: the best model is
    # the one of step 15, and the test metrics must be that model's.
    scripted = iter([0.9, 0.5, 0.3, 0.1])

    def scripted_evaluate(model, task, split, batch_size, device):
        metrics = evaluate(model, task, split, batch_size, device)
        return {**metrics, "acc": next(scripted)} if split == "val" else metrics

    monkeypatch.setattr(train_module, "evaluate", scripted_evaluate)
    run = tmp_path / "r"
    summary = train(Config(**TINY, run_dir=str(run)), progress=False)
    assert summary["best_step"] == 15 and load_checkpoint(run / "best.pt")["step"] == 15

    cfg = resolve(Config(**TINY, run_dir=str(run)))
    task = make_task(cfg)
    tests = {}
    for name in ("best", "last"):
        model = hdetach.experiments.model.SequenceModel(cfg, task)
        model.load_state_dict(load_checkpoint(run / f"{name}.pt")["model"])
        tests[name] = evaluate(model, task, "test", 1000, "cpu")
    assert tests["best"] != tests["last"]  # else this test could not tell them apart
    assert summary["test_at_best"] == tests["best"]


def _record_applied_gradients(monkeypatch, optimizer_class):
    """Every gradient the optimizer applies, as one flat vector per step."""
    applied = []
    step = optimizer_class.step

    def spy(self, *args, **kwargs):
        grads = [p.grad.flatten() for g in self.param_groups for p in g["params"]]
        applied.append(torch.cat(grads).clone())
        return step(self, *args, **kwargs)

    monkeypatch.setattr(optimizer_class, "step", spy)
    return applied


@pytest.mark.parametrize("clip", ["norm", "value"])
def test_clipping_bounds_every_applied_gradient(tmp_path, monkeypatch, clip):
    applied = _record_applied_gradients(monkeypatch, torch.optim.Adam)
    limit = 1e-3  # far below these gradients, so every step is clipped
    cfg = Config(**TINY, clip=clip, clip_value=limit, max_steps=10, run_dir=str(tmp_path / "r"))
    train(cfg, progress=False)
    assert len(applied) == 10
    if clip == "norm":
        norms = torch.stack([g.norm() for g in applied])
        torch.testing.assert_close(norms, torch.full_like(norms, limit))
    else:
        assert all(g.abs().max() <= limit for g in applied)
        assert all((g.abs() == limit).any() for g in applied)  # clipped, not just small
    # the logged norm is the one before clipping
    logged = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1]["train"]["grad_norm"] > 10 * limit


def test_no_clipping_applies_the_raw_gradient(tmp_path, monkeypatch):
    applied = _record_applied_gradients(monkeypatch, torch.optim.Adam)
    cfg = Config(**TINY, clip="none", clip_value=1e-3, max_steps=5, run_dir=str(tmp_path / "r"))
    train(cfg, progress=False)
    assert max(g.norm() for g in applied) > 1e-2


@pytest.mark.parametrize(
    "optimizer, state_key, momentum",
    [("sgd", "momentum_buffer", 0.9), ("adam", "exp_avg", None), ("rmsprop", "square_avg", None)],
)
def test_the_requested_optimizer_trains_the_model(tmp_path, optimizer, state_key, momentum):
    run = tmp_path / "r"
    train(Config(**TINY, optimizer=optimizer, max_steps=3, run_dir=str(run)), progress=False)
    opt = load_checkpoint(run / "last.pt")["optimizer"]
    assert all(set(s) >= {state_key} for s in opt["state"].values()), opt["state"][0].keys()
    assert opt["param_groups"][0]["lr"] == 1e-3
    if momentum is not None:
        assert opt["param_groups"][0]["momentum"] == momentum


def test_minibatch_order_is_a_stream_of_its_own():
    # Not any generator seeded with a small integer: those are what seed + k schemes use,
    # and seed + 1 is the next run's model seed (its initial weights and detach masks).
    def first_batches(gen):
        return torch.randint(500, (5, 20), generator=gen)

    for seed in range(4):
        cfg = resolve(Config(**{**TINY, "seed": seed}))
        sampler = train_sampler(make_task(cfg), cfg)
        ours = torch.stack([sampler.next() for _ in range(5)])
        for k in range(10):
            assert not torch.equal(ours, first_batches(torch.Generator().manual_seed(k)))


def test_throughput_counts_training_time_only(tmp_path, monkeypatch):
    # A fake clock: each training minibatch takes 1 s, each validation 1000 s.
    now = [0.0]
    monkeypatch.setattr(runlog, "clock", lambda: now[0])
    batch = copying.CopyingTask.batch

    def timed_batch(self, split, idx):
        now[0] += 1.0 if split == "train" else 0.0
        return batch(self, split, idx)

    def slow_evaluate(*args):
        now[0] += 1000.0
        return evaluate(*args)

    monkeypatch.setattr(copying.CopyingTask, "batch", timed_batch)
    monkeypatch.setattr(train_module, "evaluate", slow_evaluate)
    train(Config(**TINY, run_dir=str(tmp_path / "r")), progress=False)
    lines = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    speeds = [json.loads(x)["time"]["seq_per_s"] for x in lines]
    assert speeds == [20.0] * 4  # batch 20 per second


def test_training_steps_read_nothing_off_the_device_between_logs(tmp_path, monkeypatch):
    # As on a GPU, where reading a number waits for the device: count the reads made by
    # the loop and the tasks (the LSTM backends and torch's optimizers read CPU-side
    # numbers of their own, which do not wait for a GPU).
    monkeypatch.setattr(train_module, "checks_every_step", lambda device: False)
    lab = Path(hdetach.__file__).parent / "experiments"
    loop_files = [lab / f"{m}.py" for m in ("train/loop", "run/session", "run/log", "model")]
    loop_files += list((lab / "tasks").glob("*.py"))
    assert all(f.is_file() for f in loop_files)
    reads = [0]
    for name in ("item", "tolist", "__float__", "__bool__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _original=original, **k):
            if Path(sys._getframe(1).f_code.co_filename) in loop_files:
                reads[0] += 1
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    train(Config(**TINY, run_dir=str(tmp_path / "r")), progress=False)
    # 60 steps, 4 evaluations: a few reads per evaluation, none per step
    assert reads[0] <= 4 * 3 + 1, reads[0]


def _poison_batch(monkeypatch, at_call: int):
    """The at_call-th training minibatch carries a NaN input."""
    batch, calls = copying.CopyingTask.batch, [0]

    def poisoned(self, split, idx):
        x, y = batch(self, split, idx)
        if split == "train":
            calls[0] += 1
            if calls[0] == at_call:
                x = x.clone()
                x[0, 0, 0] = float("nan")
        return x, y

    monkeypatch.setattr(copying.CopyingTask, "batch", poisoned)
    return calls


@pytest.mark.parametrize("every_step", [True, False], ids=["cpu-check", "gpu-check"])
def test_non_finite_loss_stops_the_run_and_keeps_the_good_checkpoints(
    tmp_path, monkeypatch, capsys, every_step
):
    monkeypatch.setattr(train_module, "checks_every_step", lambda device: every_step)
    train_batches = _poison_batch(monkeypatch, at_call=20)
    run = tmp_path / "r"
    summary = train(Config(**TINY, run_dir=str(run)), progress=False)
    # On the CPU the run stops at the bad step itself; where checking costs a device sync,
    # at the next point that reads the device (here the evaluation at step 30).
    assert train_batches[0] == (20 if every_step else 30)
    assert summary["status"] == "diverged" and summary["steps"] == 20
    saved = strict_json((run / "summary.json").read_text())
    assert saved["status"] == "diverged" and saved["steps"] == 20
    assert saved["diverged"] == {"what": "loss", "value": None}  # NaN written as null
    for name in ("best.pt", "last.pt"):
        ck = load_checkpoint(run / name)
        assert ck["step"] == 15
        assert all(torch.isfinite(w).all() for w in ck["model"].values()), name
    err = capsys.readouterr().err.strip().splitlines()
    line = [x for x in err if "diverged" in x]
    assert len(line) == 1 and "step 20" in line[0] and "nan" in line[0]
    assert "--clip" in line[0] and "--lr" in line[0]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1  # step 15 only


def test_divergence_watch_reports_the_first_non_finite_value():
    watch = DivergenceWatch(step=100, device="cpu")
    watch.update(torch.tensor(1.0), torch.tensor(2.0))
    assert watch.check() is None
    watch.update(torch.tensor(1.0), torch.tensor(math.inf))
    watch.update(torch.tensor(math.nan), torch.tensor(math.nan))
    bad = watch.check()
    assert (bad.step, bad.what, bad.value) == (102, "gradient norm", math.inf)


def test_finished_summary_and_all_written_json_are_standard(tmp_path):
    run = tmp_path / "r"
    train(Config(**TINY, max_steps=15, run_dir=str(run)), progress=False)
    assert strict_json((run / "summary.json").read_text())["status"] == "finished"
    strict_json((run / "config.json").read_text())
    for line in (run / "metrics.jsonl").read_text().splitlines():
        strict_json(line)


def test_progress_lines_say_the_eta_and_come_once_a_minute(tmp_path, monkeypatch, capsys):
    now = [0.0]
    monkeypatch.setattr(runlog, "clock", lambda: now[0])
    means = {"loss": 0.5, "acc": 0.25}
    with runlog.RunLog(tmp_path, total_steps=100, step=0, desc="x", progress=False) as log:
        for step in range(1, 51):
            now[0] += 1.5  # 1.5 s a step
            log.count(20)
            if log.due():
                log.progress(step, "acc", lambda: means)
    lines = capsys.readouterr().err.strip().splitlines()
    # one line after 60 s (step 40): 60 steps to go at 1.5 s each
    assert lines == [
        f"[{tmp_path.name}] step 40/100 loss 0.5000 acc 0.2500 | 13 seq/s | ETA 1.5 min"
    ]


def test_each_interval_records_its_largest_gradient_norm_beside_the_mean(tmp_path, monkeypatch):
    """A burst in one step moves a long interval's mean little: the record keeps the
    interval's largest norm (before clipping) too."""
    from hdetach.experiments.run.session import TrainingRun

    norms = []
    clip = TrainingRun.clip_gradients

    def spy(self):
        norm = clip(self)
        norms.append(float(norm))
        return norm

    monkeypatch.setattr(TrainingRun, "clip_gradients", spy)
    settings = {**TINY, "eval_every": 4, "max_steps": 8}
    cfg = Config(**settings, clip_value=1e-3, run_dir=str(tmp_path / "r"))
    train(cfg, progress=False)
    logged = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert len(logged) == 2 and len(norms) == 8
    for record, interval in zip(logged, (norms[:4], norms[4:])):
        assert record["train"]["grad_norm_max"] == pytest.approx(max(interval), rel=1e-12)
        assert record["train"]["grad_norm"] == pytest.approx(sum(interval) / 4, rel=1e-12)
    assert logged[0]["train"]["grad_norm_max"] > logged[0]["train"]["grad_norm"]

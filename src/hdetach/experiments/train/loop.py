"""The one training loop: every task, every optimizer and detach setting, checkpoint/resume.

The training step is one function, ``_train_steps``: batch, forward, backward, clip,
step, evaluate, checkpoint. It trains one run, or several in lockstep whose forward pass
is one batched computation (a population, ``hdetach.experiments.train.population``):
everything else is each run's own. A run writes one folder (``run.folder``): its config,
a metrics line per evaluation, checkpoints, TensorBoard events and a summary.

Resuming from the last checkpoint restores every generator, so an interrupted run ends
with exactly the same metrics as one that was never interrupted (same machine and
threads). The loop reads numbers off the device only at evaluations and progress updates.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hdetach.experiments.config import (
    Config,
    ConfigError,
    checkpoint_seconds,
    resolve,
)
from hdetach.experiments.gradients.tracking import GradientTracker
from hdetach.experiments.run.checkpoint import load_checkpoint, save_checkpoint
from hdetach.experiments.run.interrupt import StopRequest
from hdetach.experiments.run.log import RunLog
from hdetach.experiments.run.session import (
    Callback,
    Divergence,
    DivergenceWatch,
    TrainingRun,
    open_run,
)
from hdetach.experiments.tasks import Task
from hdetach.rng import rng_state, set_rng_state

__all__ = [
    "Callback",
    "Config",
    "ConfigError",
    "evaluate",
    "load_checkpoint",
    "p_at_epoch",
    "resolve",
    "rng_state",
    "set_rng_state",
    "train",
]


def checks_every_step(device: str) -> bool:
    """Whether divergence is checked after every step, before the update is applied.

    On the CPU the check costs nothing. On a GPU it would make the host wait for the
    device at every step, so there the loop checks at each point where it reads numbers
    off the device anyway (evaluations, progress updates); the steps in between may
    apply non-finite updates, but no checkpoint is written before the check.
    """
    return torch.device(device).type == "cpu"


def p_at_epoch(cfg: Config, epoch: int) -> float:
    """The detach probability of an epoch: h-detach is switched off for the last K epochs."""
    return 0.0 if epoch >= cfg.epochs - cfg.anneal_epochs else cfg.p_detach


@torch.no_grad()
def evaluate(
    model: nn.Module, task: Task, split: str, batch_size: int, device: str
) -> dict[str, float]:
    """Metrics of ``split`` averaged over all its examples (eval mode: a plain LSTM)."""
    was_training = model.training
    model.eval()
    n, sums = task.size(split), {}
    for start in range(0, n, batch_size):
        idx = torch.arange(start, min(start + batch_size, n))
        x, y = task.batch(split, idx)
        _, m = task.loss_and_metrics(model(x.to(device)), y.to(device))
        for k, v in m.items():
            sums[k] = sums.get(k, 0.0) + torch.as_tensor(v, dtype=torch.float64) * len(idx)
    means = dict(zip(sums, (torch.stack(list(sums.values())) / n).tolist()))
    means.update(task.corpus_metrics(model, split, batch_size, device))
    model.train(was_training)
    return means


def train(
    cfg: Config | None = None,
    resume: str | Path | None = None,
    progress: bool | None = None,
    callbacks: Sequence[Callback] = (),
    epochs: int | None = None,
) -> dict[str, Any]:
    """Train (or resume) one run and return its summary. ``progress``: None = bar on a tty;
    ``epochs`` (with ``resume``): train the saved run to this length instead, a finished
    one included (``config.with_epochs``).

    The summary's ``status`` is "finished", "interrupted" (Ctrl-C; resume it) or
    "diverged" (a non-finite loss or gradient; checkpoints keep the last good state).
    """
    run = open_run(cfg, resume, epochs)
    if run.cfg.track_gradients:
        callbacks = (*callbacks, GradientTracker(run.cfg.track_gradients))
    (summary,) = train_runs([run], [resume is not None], forward_alone, progress, callbacks)
    return summary


# A training minibatch: the model's input and the targets, on the run's device.
Batch = tuple[Any, torch.Tensor]
# The forward pass of the runs trained together: each run's loss and metrics (on the
# device) for its batch.
Forward = Callable[[list[TrainingRun], list[Batch]], list[tuple[torch.Tensor, dict[str, Any]]]]


def forward_alone(
    runs: list[TrainingRun], batches: list[Batch]
) -> list[tuple[torch.Tensor, dict[str, Any]]]:
    """Each run's loss and metrics from its own model: the forward pass of a lone run."""
    return [run.task.loss_and_metrics(run.model(x), y) for run, (x, y) in zip(runs, batches)]


@dataclass
class Trainee:
    """A run being trained: its state, where it reports, and its watch for non-finite
    values (``divergence``: the first one found; the run stops there)."""

    run: TrainingRun
    log: RunLog
    watch: DivergenceWatch
    divergence: Divergence | None = None

    def diverged(self) -> bool:
        """Read the watch (one device sync); True if the run has diverged."""
        self.divergence = self.watch.check()
        return self.divergence is not None


def train_runs(
    runs: list[TrainingRun],
    resumed: Sequence[bool],
    forward: Forward,
    progress: bool | None = None,
    callbacks: Sequence[Callback] = (),
) -> list[dict[str, Any]]:
    """Train runs that share their schedule (steps, evaluations) in lockstep, ``forward``
    computing their losses together; each run's summary, as ``train`` returns it."""
    try:
        with contextlib.ExitStack() as stack:
            stop = stack.enter_context(
                StopRequest(
                    "stopping after this step and saving a checkpoint (Ctrl-C again to abort)",
                    second_aborts=True,
                )
            )
            trainees = [
                _trainee(stack, run, was_saved, progress) for run, was_saved in zip(runs, resumed)
            ]
            _train_steps(trainees, stop, callbacks, forward)
        return [_outcome(t) for t in trainees]
    finally:  # each folder's lock, held until its summary is written
        for run in runs:
            run.release()


def _trainee(
    stack: contextlib.ExitStack, run: TrainingRun, was_saved: bool, progress: bool | None
) -> Trainee:
    """A run ready to train, its log open in ``stack``."""
    cfg = run.cfg
    desc = f"{cfg.task} p={cfg.p_detach:g}"
    log = stack.enter_context(RunLog(run.folder.path, cfg.total_steps, run.step, desc, progress))
    if was_saved:
        log.line(f"resuming {run.folder.path} at step {run.step} of {cfg.total_steps}")
    elif run.step == 0:
        log.config(cfg.to_dict())
    return Trainee(run, log, DivergenceWatch(run.step, cfg.device))


def training_batch(run: TrainingRun) -> Batch:
    """The run's next training minibatch, on its device."""
    x, y = run.task.batch("train", run.sampler.next())
    return x.to(run.cfg.device), y.to(run.cfg.device)


def _train_steps(
    trainees: list[Trainee], stop: StopRequest, callbacks: Sequence[Callback], forward: Forward
) -> None:
    """Train every run a step at a time, in lockstep, until the last step or a stop
    request; a run that diverges stops there, alone."""
    every_step = checks_every_step(trainees[0].run.cfg.device)
    for t in trainees:
        t.run.model.train()
    active = list(trainees)
    # Besides evaluations, a checkpoint every few minutes: one pixel-MNIST epoch takes half
    # an hour on a CPU core, too much to lose to a SIGKILL.
    every, saved_at = checkpoint_seconds(), time.monotonic()
    while active and active[0].run.step < active[0].run.cfg.total_steps and not stop.requested:
        runs = [t.run for t in active]
        # Batch, at the epoch's detach probability: h-detach is off for the last
        # anneal_epochs epochs (the authors' schedule). The minibatch indices come from each
        # run's own sampler, so the data order does not depend on the model's random draws.
        for run in runs:
            run.model.lstm.p_detach = p_at_epoch(run.cfg, run.step // run.cfg.steps_per_epoch)
        batches = [training_batch(run) for run in runs]
        # Forward: a population runs its members' LSTMs as one batched computation.
        losses, metrics = zip(*forward(runs, batches))
        # Backward: one pass for all the runs. They share no parameter, so each one's
        # gradient is exactly that of its own loss.
        for run in runs:
            run.optimizer.zero_grad(set_to_none=True)
        torch.stack(losses).sum().backward()
        # Clip, after the callbacks have seen the gradients as computed (gradient tracking
        # measures them); the norm before clipping is a training metric, and watched.
        for run, m in zip(runs, metrics):
            for cb in callbacks:
                cb.after_backward(run)
            m["grad_norm"] = run.clip_gradients()
        for t, loss, m, (_, y) in zip(active, losses, metrics, batches):
            run, log = t.run, t.log
            # The watch keeps the first non-finite loss or norm on the device. Reading it
            # waits for the device: on the CPU that costs nothing, so there a bad update is
            # never applied; elsewhere it is read below, before any checkpoint.
            t.watch.update(loss.detach(), m["grad_norm"])
            if every_step and t.diverged():
                continue
            # Step; the interval's training metrics stay on the device until it is logged.
            run.optimizer.step()
            run.step += 1
            run.accumulate(m)
            log.count(len(y))
            # Evaluate, or show progress: both read the device, so only at an evaluation
            # or about once a second, and never for a run that has diverged.
            at_eval = _at_evaluation(run)
            if not (at_eval or log.due()) or t.diverged():
                continue
            if not at_eval:
                log.progress(run.step, run.task.metric, run.train_means)
                continue
            improved = _evaluate(run, log, callbacks)
            # Checkpoint, after the metrics line: a crash between the two leaves a line past
            # last.pt's step, which the resume drops and writes again.
            state = run.state_dict()
            if improved:
                save_checkpoint(state, run.folder.best_checkpoint)
            save_checkpoint(state, run.folder.last_checkpoint)
            log.start_interval()
        active = [t for t in active if t.divergence is None]
        if active and _at_evaluation(active[0].run):
            saved_at = time.monotonic()  # the evaluation has just written every last.pt
        elif every and time.monotonic() - saved_at >= every:
            _save_between_evaluations(active)
            active, saved_at = [t for t in active if t.divergence is None], time.monotonic()
    _save_between_evaluations(active)  # the stop's step boundary


def _evaluate(run: TrainingRun, log: RunLog, callbacks: Sequence[Callback]) -> bool:
    """Validate and log the interval's record; True if validation improved on the best."""
    cfg, metric = run.cfg, run.task.metric
    train_means = run.take_train_means()
    seq_per_s = log.seq_per_s()  # before validating: the speed of training alone
    val = evaluate(run.model, run.task, "val", cfg.eval_batch_size, cfg.device)
    improved = run.update_best(val[metric])
    record = {
        "step": run.step,
        "epoch": run.step / cfg.steps_per_epoch,
        "p_detach": run.model.lstm.p_detach,
        "metric": metric,
        "train": train_means,
        "val": val,
        "best": dict(run.best),
        "time": {"seq_per_s": seq_per_s},
    }
    for cb in callbacks:
        cb.on_eval(run, record)
    log.record(record, metric)
    return improved


def _save_between_evaluations(trainees: list[Trainee]) -> None:
    """Write last.pt for each run not at an evaluation (which wrote it) and not diverged
    (no checkpoint holds a non-finite step)."""
    for t in trainees:
        if not _at_evaluation(t.run) and not t.diverged():
            save_checkpoint(t.run.state_dict(), t.run.folder.last_checkpoint)


def _at_evaluation(run: TrainingRun) -> bool:
    """Whether the run's last step was followed by an evaluation (which wrote last.pt)."""
    return run.step % run.cfg.eval_every == 0 or run.step == run.cfg.total_steps


def _outcome(t: Trainee) -> dict[str, Any]:
    """The summary of a run whose training stopped: diverged, interrupted or finished."""
    run = t.run
    if t.divergence is not None:
        return _diverged(run, t.divergence)
    if run.step < run.cfg.total_steps:
        print(
            f"stopped at step {run.step}; continue with: hdetach train --resume {run.folder.path}",
            file=sys.stderr,
        )
        return {"status": "interrupted", "step": run.step, "run_dir": str(run.folder.path)}
    return _finish(run)


def _summary(run: TrainingRun, status: str, **fields: Any) -> dict[str, Any]:
    best = run.best
    summary = {
        "status": status,
        "run_dir": str(run.folder.path),
        "task": run.cfg.task,
        "metric": run.task.metric,
        "steps": run.step,
        "best_step": best["step"],
        "best_epoch": None if best["step"] is None else best["step"] / run.cfg.steps_per_epoch,
        "best_val": best["value"],
        **fields,
    }
    run.folder.write_summary(summary)
    return summary


def _finish(run: TrainingRun) -> dict[str, Any]:
    """Test the best-validation model and write summary.json."""
    cfg, metric = run.cfg, run.task.metric
    final_val = run.folder.read_metrics()[-1]["val"][metric]
    run.model.load_state_dict(load_checkpoint(run.folder.best_checkpoint)["model"])
    test = evaluate(run.model, run.task, "test", cfg.eval_batch_size, cfg.device)
    summary = _summary(run, "finished", final_val=final_val, test_at_best=test)
    print(
        f"done: best val {metric} {run.best['value']:.4f} at step {run.best['step']}, "
        f"test {metric} {test[metric]:.4f} -> {run.folder.path}",
        file=sys.stderr,
    )
    return summary


def _diverged(run: TrainingRun, bad: Divergence) -> dict[str, Any]:
    """Say so in one line and write summary.json; the checkpoints are left as they were."""
    last = run.folder.last_checkpoint
    kept = (
        f"{last.name} keeps step {load_checkpoint(last)['step']}"
        if last.is_file()
        else "no checkpoint was written"
    )
    print(
        f"diverged at step {bad.step}: training {bad.what} is {bad.value} ({kept}); "
        "try gradient clipping (--clip norm) or a smaller --lr",
        file=sys.stderr,
    )
    run.step = bad.step
    return _summary(run, "diverged", diverged={"what": bad.what, "value": bad.value})

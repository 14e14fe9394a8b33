"""The state of one training run: model, optimizer, data order, progress, and how it is
created fresh or restored from a checkpoint; plus the watch for non-finite values."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import torch

import hdetach
from hdetach.experiments.config import Config, ConfigError, resolve, with_epochs
from hdetach.experiments.model import clip_gradients, make_model, make_optimizer
from hdetach.experiments.run.checkpoint import (
    CheckpointError,
    config_of,
    load_checkpoint,
    save_checkpoint,
)
from hdetach.experiments.run.folder import RunFolder
from hdetach.experiments.tasks import Task
from hdetach.experiments.tasks.registry import make_task
from hdetach.experiments.tasks.streams import data_rng
from hdetach.rng import global_generator, rng_state, seed_everything, set_rng_state


class Sampler:
    """Training minibatch indices from its own generator, so its state can be checkpointed.

    With replacement (synthetic tasks): every batch is ``batch_size`` random indices.
    Without (MNIST): a fresh shuffle at each epoch, consumed in order.
    """

    def __init__(self, n: int, batch_size: int, with_replacement: bool, gen: torch.Generator):
        self.n, self.batch_size, self.with_replacement = n, batch_size, with_replacement
        self.gen = gen
        self.order = torch.empty(0, dtype=torch.long)
        self.pos = 0

    def next(self) -> torch.Tensor:
        if self.with_replacement:
            return torch.randint(self.n, (self.batch_size,), generator=self.gen)
        if self.pos >= len(self.order):
            self.order, self.pos = torch.randperm(self.n, generator=self.gen), 0
        idx = self.order[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx

    def state_dict(self) -> dict[str, Any]:
        return {"gen": self.gen.get_state(), "order": self.order, "pos": self.pos}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.gen.set_state(s["gen"])
        self.order, self.pos = s["order"], s["pos"]


def train_sampler(task: Task, cfg: Config) -> Sampler:
    """The training data order: a stream of its own, fixed by the seed, so it does not shift
    when the model draws a different number of random numbers (e.g. p = 0 vs 0.25)."""
    gen = data_rng(cfg.seed, "train/minibatches")
    return Sampler(task.size("train"), cfg.batch_size, task.sample_with_replacement, gen)


@dataclass
class Divergence:
    step: int
    what: str  # "loss" or "gradient norm"
    value: float


class DivergenceWatch:
    """Remembers, on the device, the first step whose loss or gradient norm is not finite;
    ``check()`` reads it back (one device sync) and returns it, or None."""

    def __init__(self, step: int, device: str):
        self.start_step = step
        self.count = torch.zeros((), dtype=torch.float64, device=device)
        # [steps since start at the first bad step (-1: none), its loss, its gradient norm]
        self.first = torch.tensor([-1.0, 0.0, 0.0], dtype=torch.float64, device=device)

    def update(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        self.count += 1
        now = torch.stack([self.count, loss.detach().double(), grad_norm.double()])
        bad = ~(torch.isfinite(now[1]) & torch.isfinite(now[2])) & (self.first[0] < 0)
        self.first = torch.where(bad, now, self.first)

    def check(self) -> Divergence | None:
        count, loss, grad_norm = self.first.tolist()
        if count < 0:
            return None
        step = self.start_step + int(count)
        if loss != loss or abs(loss) == float("inf"):
            return Divergence(step, "loss", loss)
        return Divergence(step, "gradient norm", grad_norm)


PEAKED = ("grad_norm",)  # training metrics whose interval maximum is recorded beside the mean


@dataclass
class TrainingRun:
    """Everything a run holds between steps; ``state_dict`` is its checkpoint (the run's
    files: ``folder``; a run folder as the report reads it: ``report.runs.RunRecord``)."""

    cfg: Config
    folder: RunFolder
    task: Task
    model: torch.nn.Module  # the task's model (task.make_model)
    optimizer: torch.optim.Optimizer
    sampler: Sampler
    step: int = 0
    best: dict[str, Any] = field(default_factory=lambda: {"value": None, "step": None})
    # training metric sums (0-d float64 tensors on the device) since the last evaluation
    sums: dict[str, Any] = field(default_factory=lambda: {"n": 0})
    # and the largest of each of PEAKED since then: an interval's mean hides one step's burst
    peaks: dict[str, Any] = field(default_factory=dict)
    # the random state a checkpoint saves: every global generator's, unless the run draws
    # from generators of its own (a population member)
    rng_source: Callable[[], dict[str, Any]] = rng_state
    lock: IO[str] | None = None  # held while this process trains the folder (RunFolder.lock)

    def release(self) -> None:
        """Let another process train the folder."""
        if self.lock is not None:
            self.lock.close()
            self.lock = None

    def clip_gradients(self) -> torch.Tensor:
        return clip_gradients(list(self.model.parameters()), self.cfg.clip, self.cfg.clip_value)

    def accumulate(self, metrics: dict[str, Any]) -> None:
        for k, v in metrics.items():
            v = torch.as_tensor(v).detach().to(self.cfg.device, torch.float64)
            self.sums[k] = self.sums[k] + v if k in self.sums else v
            if k in PEAKED:
                self.peaks[k] = torch.maximum(self.peaks[k], v) if k in self.peaks else v
        self.sums["n"] += 1

    def train_means(self) -> dict[str, float]:
        """Training metric averages since the last evaluation, and the largest value of
        each of PEAKED as ``<name>_max`` (one device sync)."""
        n, keys = self.sums["n"], [k for k in self.sums if k != "n"]
        if not keys:
            return {}
        values = [self.sums[k] / n for k in keys] + list(self.peaks.values())
        names = keys + [f"{k}_max" for k in self.peaks]
        return dict(zip(names, torch.stack(values).tolist()))

    def take_train_means(self) -> dict[str, float]:
        means, self.sums, self.peaks = self.train_means(), {"n": 0}, {}
        return means

    def update_best(self, value: float) -> bool:
        """Record ``value`` of the selection metric; True if it is the best so far."""
        previous = self.best["value"]
        better = previous is None or (
            value > previous if self.task.higher_is_better else value < previous
        )
        if better:
            self.best = {"value": value, "step": self.step}
        return better

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": self.cfg.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": self.rng_source(),
            "step": self.step,
            "best": self.best,
            "sums": {k: v.cpu() if torch.is_tensor(v) else v for k, v in self.sums.items()},
            "peaks": {k: v.cpu() for k, v in self.peaks.items()},
        }

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.model.load_state_dict(s["model"])
        self.optimizer.load_state_dict(s["optimizer"])
        self.sampler.load_state_dict(s["sampler"])
        set_rng_state(s["rng"])
        self.step, self.best = s["step"], s["best"]
        self.sums = {
            k: v.to(self.cfg.device) if torch.is_tensor(v) else v for k, v in s["sums"].items()
        }
        # a checkpoint from before peaks were kept: the interval's peak from here on
        self.peaks = {k: v.to(self.cfg.device) for k, v in s.get("peaks", {}).items()}


def open_run(
    cfg: Config | None, resume: str | Path | None, epochs: int | None = None
) -> TrainingRun:
    """A fresh run from ``cfg`` (its directory created) or the one saved in ``resume``
    (trained for ``epochs`` in all, if given)."""
    cfg, ckpt = run_config(cfg, resume, epochs)
    return build_run(cfg, ckpt, Path(resume or cfg.run_dir))


def run_config(
    cfg: Config | None, resume: str | Path | None, epochs: int | None = None
) -> tuple[Config, dict[str, Any] | None]:
    """The resolved config of a fresh run, or the saved config and checkpoint of the run
    in ``resume``, lengthened (or shortened) to ``epochs`` if given; checked, nothing
    created."""
    if resume is None:
        cfg = resolve(cfg or Config())
        if RunFolder(cfg.run_dir).last_checkpoint.exists():
            raise ConfigError(f"--run-dir {cfg.run_dir} already holds a run; use --resume")
        return cfg, None
    path = RunFolder(resume).last_checkpoint
    if not path.is_file():
        raise ConfigError(f"--resume {resume}: no {path.name} checkpoint there")
    ckpt = load_checkpoint(path)
    cfg = config_of(ckpt, path)
    return (cfg if epochs is None else with_epochs(cfg, epochs, ckpt["step"])), ckpt


def draw_masks_from_the_global_generator(model: torch.nn.Module, device: str) -> None:
    """The lab's runs draw their detach masks from torch's global generator, as they always
    have: its state is in every checkpoint (exact resume, also of runs saved before the
    modules had streams of their own), and a population member's masks replay its lone
    twin's from it (train_population). The sequence models draw nothing else while
    training, so there the masks shift no other draw; the caption decoders' dropout does
    draw from it, so a captioning run at p > 0 sees other dropout draws than at p = 0."""
    for module in model.modules():
        if isinstance(module, (hdetach.LSTM, hdetach.LSTMCell)):
            module.generator = global_generator(device)


def build_run(cfg: Config, ckpt: dict[str, Any] | None, run_dir: Path) -> TrainingRun:
    """The run of ``run_config``'s answer: seeded and built, restored from ``ckpt`` when
    given, else its directory created with its config.json."""
    task = make_task(cfg)
    seed_everything(cfg.seed)
    model = make_model(cfg, task).to(cfg.device)
    draw_masks_from_the_global_generator(model, cfg.device)
    optimizer = make_optimizer(cfg, model.parameters())
    run = TrainingRun(cfg, RunFolder(run_dir), task, model, optimizer, train_sampler(task, cfg))
    try:
        if ckpt is not None:
            _restore(run, ckpt)
        else:
            _create(run)
    except BaseException:  # a run that is not returned must not keep its folder locked
        run.release()
        raise
    return run


def _restore(run: TrainingRun, ckpt: dict[str, Any]) -> None:
    """Lock the run's folder and restore the run from its checkpoint; where the config
    has another length, the folder's files say so."""
    folder = run.folder
    run.lock = folder.lock()  # before anything in the folder changes
    try:
        run.load_state_dict(ckpt)
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        reason = str(e).strip().splitlines()[0]
        raise CheckpointError(
            f"{folder.last_checkpoint}: does not fit its own config ({reason})"
        ) from None
    folder.truncate_metrics(run.step)  # the steps after the checkpoint are trained again
    cfg = run.cfg
    if cfg.to_dict() != ckpt["config"]:  # another length: the run goes on to the new end
        # The checkpoint first: an interrupted run then resumes at the new length.
        save_checkpoint({**ckpt, "config": cfg.to_dict()}, folder.last_checkpoint)
        folder.write_config(cfg.to_dict())
        folder.remove_summary()


def _create(run: TrainingRun) -> None:
    """Create and lock a fresh run's folder, with its config.json."""
    try:
        run.folder.create()
    except OSError as e:
        raise ConfigError(f"--run-dir {run.folder.path}: cannot create it ({e.strerror})") from None
    run.lock = run.folder.lock()
    run.folder.write_config(run.cfg.to_dict())
    run.folder.remove_metrics()


class Callback:
    """A hook into the loop: subclass and override what you need; pass to ``train``."""

    def after_backward(self, run: TrainingRun) -> None:
        """The step's gradients are in ``run.model`` (before clipping)."""

    def on_eval(self, run: TrainingRun, record: dict[str, Any]) -> None:
        """After each evaluation; keys added to ``record`` go into metrics.jsonl."""

"""The one training loop: every task, every optimizer and detach setting, checkpoint/resume.

A run writes one directory::

    config.json        the full resolved config
    metrics.jsonl      one JSON line per evaluation (train averages over the interval + val)
    tb/                TensorBoard event files
    last.pt, best.pt   checkpoints: model, optimizer, every RNG state, sampler, step, best
    summary.json       final summary, with test metrics of the best-validation model

Resuming from ``last.pt`` restores every generator, so an interrupted run ends with
exactly the same metrics as one that was never interrupted (same machine and threads).
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

import hdetach
from hdetach.functional import BACKENDS, DETACH_PATHS
from hdetach.nn.lstm import DETACH_SCOPES
from hdetach.tasks import Task, make_task

TASKS = ("copy", "adding", "mnist", "pmnist")

# Task defaults follow the protocols of the authors' public code (see README, Experiments).
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "copy": dict(
        T=100, hidden_size=128, epochs=200, steps_per_epoch=1000, n_train=100_000, n_val=5000
    ),
    "adding": dict(
        T=200, hidden_size=128, epochs=50, steps_per_epoch=1000, n_train=100_000, n_val=5000
    ),
    # For MNIST an epoch is one pass over the (first n_train of the) 50k training images.
    "mnist": dict(T=784, hidden_size=100, epochs=200, n_train=50_000, n_val=10_000),
    "pmnist": dict(T=784, hidden_size=100, epochs=200, n_train=50_000, n_val=10_000),
}


class ConfigError(ValueError):
    """A bad option value, detected before any work starts."""


@dataclass
class Config:
    """Everything that defines a run. ``None`` means "the task's default" until resolved."""

    task: str = "copy"
    T: int | None = None  # copy: blank-gap length; adding: sequence length; MNIST: fixed 784
    input_encoding: str = "scalar"  # copy: "scalar" (the paper's raw float) or "onehot"
    perm_seed: int = 0  # pmnist: seed of the fixed pixel permutation, independent of --seed
    data_dir: str | None = None  # MNIST folder; None: $HDETACH_DATA/mnist or the user cache
    # model
    hidden_size: int | None = None
    num_layers: int = 1
    p_detach: float = 0.25  # 0 is the vanilla LSTM
    anneal_epochs: int = 0  # switch h-detach off (p=0) for the last K epochs
    detach_scope: str = "batch"
    detach_path: str = "h"
    backend: str = "auto"
    # optimisation
    optimizer: str = "adam"
    lr: float = 1e-3
    clip: str = "norm"  # "norm" | "value" | "none"
    clip_value: float = 1.0
    batch_size: int = 100
    epochs: int | None = None
    steps_per_epoch: int | None = None
    max_steps: int | None = None  # train for at most this many steps in total
    eval_every: int | None = None  # steps between evaluations; default: once per epoch
    eval_batch_size: int = 1000
    track_gradients: int = 0  # every N steps, log the gradient's cell/h path split (0: off)
    # data sizes (MNIST: the first n_* images of each split)
    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    seed: int = 0
    device: str = "auto"
    run_dir: str | None = None
    total_steps: int | None = None  # filled in by resolve()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(
            f"--{name.replace('_', '-')} must be one of "
            f"{', '.join(map(str, choices))}; got {value!r}"
        )


def _positive(name: str, value: float | None, zero_ok: bool = False) -> None:
    if value is not None and not (value >= 0 if zero_ok else value > 0):
        raise ConfigError(
            f"--{name.replace('_', '-')} must be {'>= 0' if zero_ok else '> 0'}; got {value}"
        )


def resolve(cfg: Config) -> Config:
    """Validate every option and fill in task defaults; raises ConfigError naming the option."""
    _choice("task", cfg.task, TASKS)
    _choice("input_encoding", cfg.input_encoding, ("scalar", "onehot"))
    _choice("detach_scope", cfg.detach_scope, DETACH_SCOPES)
    _choice("detach_path", cfg.detach_path, DETACH_PATHS)
    _choice("backend", cfg.backend, BACKENDS)
    _choice("optimizer", cfg.optimizer, ("adam", "sgd", "rmsprop"))
    _choice("clip", cfg.clip, ("norm", "value", "none"))
    if not 0.0 <= cfg.p_detach <= 1.0:
        raise ConfigError(f"--p-detach must be in [0, 1]; got {cfg.p_detach}")
    for name in (
        "T",
        "hidden_size",
        "num_layers",
        "lr",
        "clip_value",
        "batch_size",
        "epochs",
        "steps_per_epoch",
        "max_steps",
        "eval_every",
        "eval_batch_size",
        "n_train",
        "n_val",
        "n_test",
    ):
        _positive(name, getattr(cfg, name))
    _positive("anneal_epochs", cfg.anneal_epochs, zero_ok=True)
    _positive("track_gradients", cfg.track_gradients, zero_ok=True)
    if cfg.device != "auto" and not cfg.device.startswith(("cpu", "cuda")):
        raise ConfigError(f"--device must be auto, cpu or cuda[:N]; got {cfg.device!r}")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {cfg.device} requested but CUDA is not available")

    d = {**TASK_DEFAULTS[cfg.task], **{k: v for k, v in cfg.to_dict().items() if v is not None}}
    if cfg.task in ("mnist", "pmnist"):
        if d["T"] != 784:
            raise ConfigError(f"--T is fixed at 784 for {cfg.task}; got {d['T']}")
        if d["n_train"] > 50_000 or d["n_val"] > 10_000 or d.get("n_test", 0) > 10_000:
            raise ConfigError("MNIST has at most --n-train 50000, --n-val 10000, --n-test 10000")
        d.setdefault("n_test", 10_000)
        d["data_dir"] = d.get("data_dir") or str(_default_mnist_dir())
        d.setdefault("steps_per_epoch", math.ceil(d["n_train"] / d["batch_size"]))
    else:
        d.setdefault("n_test", d["n_val"])
    if d["anneal_epochs"] >= d["epochs"]:
        raise ConfigError(
            f"--anneal-epochs must be < --epochs ({d['epochs']}); got {d['anneal_epochs']}"
        )
    d.setdefault("eval_every", d["steps_per_epoch"])
    d["total_steps"] = d["epochs"] * d["steps_per_epoch"]
    if cfg.max_steps is not None:
        d["total_steps"] = min(d["total_steps"], cfg.max_steps)
    if d["device"] == "auto":
        d["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    if d.get("run_dir") is None:
        p = "vanilla" if d["p_detach"] == 0 else f"p{d['p_detach']:g}"
        d["run_dir"] = str(
            Path("runs") / f"{d['task']}-T{d['T']}-{p}-s{d['seed']}-"
            f"{time.strftime('%Y%m%d-%H%M%S')}"
        )
    return Config(**d)


def _default_mnist_dir() -> Path:
    from hdetach.tasks.mnist import default_data_dir

    return default_data_dir()


class SequenceModel(nn.Module):
    """An ``hdetach.LSTM`` and a linear read-out, at every step or at the last one.

    x (B, L, input_size) -> (B, L, output_size) if readout == "all" else (B, output_size).
    """

    def __init__(self, cfg: Config, task: Task):
        super().__init__()
        self.readout = task.readout
        self.lstm = hdetach.LSTM(
            task.input_size,
            cfg.hidden_size,
            num_layers=cfg.num_layers,
            batch_first=True,
            p_detach=cfg.p_detach,
            detach_scope=cfg.detach_scope,
            detach_path=cfg.detach_path,
            backend=cfg.backend,
        )
        self.head = nn.Linear(cfg.hidden_size, task.output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out if self.readout == "all" else out[:, -1])


class Sampler:
    """Training minibatch indices from its own generator, so its state can be checkpointed.

    With replacement (synthetic tasks): every batch is ``batch_size`` random indices.
    Without (MNIST): a fresh shuffle at each epoch, consumed in order.
    """

    def __init__(self, n: int, batch_size: int, with_replacement: bool, seed: int):
        self.n, self.batch_size, self.with_replacement = n, batch_size, with_replacement
        self.gen = torch.Generator().manual_seed(seed)
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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds CUDA; the detach masks come from this generator


def rng_state() -> dict[str, Any]:
    """Every global generator's state as plain tensors/ints (loadable with weights_only)."""
    np_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": np_state["state"]["pos"],
            "has_gauss": np_state["has_gauss"],
            "gauss": np_state["gauss"],
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(s: dict[str, Any]) -> None:
    random.setstate(s["python"])
    n = s["numpy"]
    np.random.set_state(
        ("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    torch.set_rng_state(s["torch"])
    if s["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def make_optimizer(cfg: Config, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9)


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
            sums[k] = sums.get(k, 0.0) + v * len(idx)
    model.train(was_training)
    return {k: v / n for k, v in sums.items()}


class _StopFlag:
    """Turns the first Ctrl-C into a request to stop at the next step boundary, so the
    checkpoint written on the way out is consistent; a second Ctrl-C aborts at once."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(
            "\ninterrupt: stopping after this step and saving a checkpoint (Ctrl-C again to abort)",
            file=sys.stderr,
            flush=True,
        )

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self._old)


def _save(obj: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)  # atomic: a crash mid-write never leaves a half checkpoint


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _log(msg: str, bar) -> None:
    (bar.write if bar is not None else print)(msg, file=sys.stderr)
    sys.stderr.flush()


def train(
    cfg: Config | None = None, resume: str | Path | None = None, progress: bool | None = None
) -> dict[str, Any]:
    """Train (or resume) one run and return its summary. ``progress``: None = bar on a tty."""
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "last.pt").is_file():
            raise ConfigError(f"--resume {run_dir}: no last.pt checkpoint there")
        ckpt = load_checkpoint(run_dir / "last.pt")
        cfg = Config(**ckpt["config"])
    else:
        cfg = resolve(cfg or Config())
        run_dir = Path(cfg.run_dir)
        if (run_dir / "last.pt").exists():
            raise ConfigError(f"--run-dir {run_dir} already holds a run; use --resume {run_dir}")
        ckpt = None

    task = make_task(cfg)
    seed_everything(cfg.seed)
    model = SequenceModel(cfg, task).to(cfg.device)
    opt = make_optimizer(cfg, model.parameters())
    # Seeded from the run seed but a separate stream, so the data order does not shift
    # when the model consumes a different number of random numbers (e.g. p = 0 vs 0.25).
    sampler = Sampler(
        task.size("train"), cfg.batch_size, task.sample_with_replacement, seed=cfg.seed + 1
    )
    step, best, accum = 0, {"value": None, "step": None}, {}
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sampler.load_state_dict(ckpt["sampler"])
        set_rng_state(ckpt["rng"])
        step, best, accum = ckpt["step"], ckpt["best"], ckpt["accum"]
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    _truncate_metrics(run_dir / "metrics.jsonl", step)

    from torch.utils.tensorboard import SummaryWriter

    tb = SummaryWriter(str(run_dir / "tb"), purge_step=step if step else None)
    show_bar = sys.stderr.isatty() if progress is None else progress
    from tqdm import tqdm

    bar = tqdm(
        total=cfg.total_steps,
        initial=step,
        disable=not show_bar,
        dynamic_ncols=True,
        desc=f"{cfg.task} p={cfg.p_detach:g}",
    )
    if step == 0:
        _log(json.dumps(cfg.to_dict()), bar)

    def checkpoint() -> dict[str, Any]:
        return {
            "config": cfg.to_dict(),
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "sampler": sampler.state_dict(),
            "rng": rng_state(),
            "step": step,
            "best": best,
            "accum": accum,
        }

    model.train()
    t_last, n_seqs = time.time(), 0
    t_said = t_last
    with _StopFlag() as stop:
        while step < cfg.total_steps and not stop.requested:
            epoch = step // cfg.steps_per_epoch
            model.lstm.p_detach = p_at_epoch(cfg, epoch)
            x, y = task.batch("train", sampler.next())
            out = model(x.to(cfg.device))
            loss, m = task.loss_and_metrics(out, y.to(cfg.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            # The pre-clipping norm is logged whatever the clipping mode (inf: no clipping).
            max_norm = cfg.clip_value if cfg.clip == "norm" else math.inf
            m["grad_norm"] = nn.utils.clip_grad_norm_(model.parameters(), max_norm).item()
            if cfg.clip == "value":
                nn.utils.clip_grad_value_(model.parameters(), cfg.clip_value)
            opt.step()
            step += 1
            n_seqs += len(y)
            if cfg.track_gradients and step % cfg.track_gradients == 0:
                _track_gradients(model, task, x.to(cfg.device), y.to(cfg.device), step, run_dir, tb)
            for k, v in m.items():
                accum[k] = accum.get(k, 0.0) + v
            accum["n"] = accum.get("n", 0) + 1
            bar.update(1)
            seq_s = n_seqs / max(time.time() - t_last, 1e-9)
            if show_bar:
                bar.set_postfix(
                    loss=f"{m['loss']:.4f}",
                    **{task.metric: f"{m[task.metric]:.4f}"},
                    seq_s=f"{seq_s:.0f}",
                )
            elif time.time() - t_said > 60:  # without a bar, still say something every minute
                _log(
                    f"[{run_dir.name}] step {step}/{cfg.total_steps} loss {m['loss']:.4f} "
                    f"{task.metric} {m[task.metric]:.4f} | {seq_s:.0f} seq/s",
                    None,
                )
                t_said = time.time()

            if step % cfg.eval_every == 0 or step == cfg.total_steps:
                val = evaluate(model, task, "val", cfg.eval_batch_size, cfg.device)
                elapsed = time.time() - t_last
                n = accum.pop("n")
                rec = {
                    "step": step,
                    "epoch": step / cfg.steps_per_epoch,
                    "p_detach": model.lstm.p_detach,
                    "train": {k: v / n for k, v in accum.items()},
                    "val": val,
                    "time": {"seq_per_s": n_seqs / elapsed, "wall": time.time()},
                }
                accum = {}
                v = val[task.metric]
                improved = best["value"] is None or (
                    v > best["value"] if task.higher_is_better else v < best["value"]
                )
                if improved:
                    best = {"value": v, "step": step}
                rec["best"] = dict(best)
                with open(run_dir / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(rec) + "\n")
                for split in ("train", "val"):
                    for k, val_k in rec[split].items():
                        tb.add_scalar(f"{split}/{k}", val_k, step)
                tb.add_scalar("p_detach", rec["p_detach"], step)
                tb.flush()
                _log(
                    f"[{run_dir.name}] step {step}/{cfg.total_steps} epoch {rec['epoch']:.2f} "
                    f"train loss {rec['train']['loss']:.4f} {task.metric} "
                    f"{rec['train'][task.metric]:.4f} | val loss {val['loss']:.4f} "
                    f"{task.metric} {v:.4f} | {rec['time']['seq_per_s']:.0f} seq/s",
                    bar,
                )
                ck = checkpoint()
                if improved:
                    _save(ck, run_dir / "best.pt")
                _save(ck, run_dir / "last.pt")
                t_last, n_seqs = time.time(), 0
        # After an interrupt (or a max-steps stop) the state at this step boundary is saved.
        if step % cfg.eval_every != 0 and step != cfg.total_steps:
            _save(checkpoint(), run_dir / "last.pt")
    bar.close()
    tb.close()

    if step < cfg.total_steps:
        _log(f"stopped at step {step}; continue with: hdetach train --resume {run_dir}", None)
        return {"status": "interrupted", "step": step, "run_dir": str(run_dir)}
    return _finish(cfg, task, model, run_dir, best, step)


def _track_gradients(model, task, x, y, step: int, run_dir: Path, tb) -> None:
    from hdetach.analysis.tracking import gradient_record, tensorboard_scalars

    record = gradient_record(model, lambda: task.loss_and_metrics(model(x), y)[0])
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": step, "gradients": record}) + "\n")
    for tag, value in tensorboard_scalars(record).items():
        tb.add_scalar(tag, value, step)


def _finish(
    cfg: Config, task: Task, model: nn.Module, run_dir: Path, best: dict[str, Any], step: int
) -> dict[str, Any]:
    """Test the best-validation model and write summary.json."""
    lines = (json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines())
    records = [r for r in lines if "val" in r]  # not the --track-gradients lines
    model.load_state_dict(load_checkpoint(run_dir / "best.pt")["model"])
    test = evaluate(model, task, "test", cfg.eval_batch_size, cfg.device)
    summary = {
        "status": "finished",
        "run_dir": str(run_dir),
        "task": cfg.task,
        "metric": task.metric,
        "steps": step,
        "best_step": best["step"],
        "best_epoch": best["step"] / cfg.steps_per_epoch,
        "best_val": best["value"],
        "final_val": records[-1]["val"][task.metric],
        "test_at_best": test,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    _log(
        f"done: best val {task.metric} {best['value']:.4f} at step {best['step']}, "
        f"test {task.metric} {test[task.metric]:.4f} -> {run_dir}",
        None,
    )
    return summary


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines written after the checkpoint being resumed (none in a clean run)."""
    if not path.exists():
        return
    lines = [ln for ln in path.read_text().splitlines() if json.loads(ln)["step"] <= step]
    path.write_text("".join(ln + "\n" for ln in lines))

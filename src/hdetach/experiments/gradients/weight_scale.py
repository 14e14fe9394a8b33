"""The weight-scale study: the gradient's path balance at initialization as W_hh grows.

The paper predicts that the h-path part of the gradient grows with the scale of the
recurrent weights until it drowns the cell-path part, and that the gradient reaching
early inputs travels mostly by the cell path. For each seed the study builds the task's
model at initialization (the training code's own model and data), multiplies every
W_hh by s, and measures on one minibatch:

- ``ratio``: ||hidden|| / ||cell|| of the training loss's gradient, per parameter group;
- ``share_first``: per path, the share of the squared input-gradient norm that lies on
  the first K steps, for the loss at the sequence's end (for copying: the last 10
  outputs, so the first 10 inputs are reached only across the whole gap);
- ``first_ratio``: ||hidden|| / ||cell|| of that input gradient on the first K steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from hdetach.analysis.paths import gradient_paths
from hdetach.analysis.profiles import GradientProfiles, gradient_profiles
from hdetach.experiments.config import Config, resolve
from hdetach.experiments.gradients.options import StudySettings
from hdetach.experiments.model import SequenceModel
from hdetach.experiments.run.files import finite_or_none
from hdetach.experiments.tasks import Task
from hdetach.experiments.tasks.registry import TASKS, make_task
from hdetach.rng import seed_everything

RATIO_GROUPS = ("lstm", "W_ih", "W_hh", "bias")


def study_config(settings: StudySettings, seed: int) -> Config:
    """The resolved config of the study's model and data at ``seed``: those of
    ``hdetach train``, with ``settings.batch_size`` examples per split, on the CPU."""
    n = settings.batch_size
    return resolve(
        Config(
            task=settings.task,
            T=settings.T if TASKS[settings.task].takes_T else None,
            input_encoding=settings.input_encoding,
            hidden_size=settings.hidden_size,
            n_train=n,
            n_val=n,
            n_test=n,
            seed=seed,
            device="cpu",
            run_dir="unused",
        )
    )


def end_loss(task: Task, out: Tensor, y: Tensor, end_steps: int) -> Tensor:
    """The loss of the last ``end_steps`` outputs (tasks read out at every step) or the
    task's loss (tasks read out at the last step already)."""
    if task.readout == "all":
        return task.loss_and_metrics(out[:, -end_steps:], y[:, -end_steps:])[0]
    return task.loss_and_metrics(out, y)[0]


def measure(
    model: nn.Module, task: Task, x: Tensor, y: Tensor, first: int, end_steps: int
) -> tuple[dict, GradientProfiles]:
    """The study's numbers for one model and minibatch (see the module docstring)."""
    groups = gradient_paths(model, lambda: task.loss_and_metrics(model(x), y)[0]).summary()
    profiles = gradient_profiles(model, lambda: end_loss(task, model(x), y, end_steps))
    early = {path: float(profiles.norms[path]["x"][:first].norm()) for path in profiles.norms}
    numbers = {
        "ratio": {g: groups["groups"][g]["ratio"] for g in RATIO_GROUPS},
        "share_first": profiles.share_of_first(first),
        "first_ratio": early["hidden"] / early["cell"] if early["cell"] > 0 else None,
        "groups": groups["groups"],
    }
    return numbers, profiles


def _stats(values: list[float | None]) -> dict[str, float | int | None]:
    """Mean, std (population), median, min, max over the defined values; n counts them."""
    a = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if not len(a):
        return {"n": 0, "mean": None, "std": None, "median": None, "min": None, "max": None}
    return {
        "n": len(a),
        "mean": float(a.mean()),
        "std": float(a.std()),
        "median": float(np.median(a)),
        "min": float(a.min()),
        "max": float(a.max()),
    }


def _flatten(numbers: dict, prefix: str = "") -> dict[str, float | None]:
    flat = {}
    for key, value in numbers.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@dataclass
class StudyResult:
    settings: StudySettings
    per_seed: dict[float, list[dict]] = field(default_factory=dict)  # scale -> seeds' numbers
    profiles: dict[float, dict[str, list[float]]] = field(default_factory=dict)  # mean ||dL/dx_t||

    def to_json(self) -> dict:
        """Every number, JSON-ready (None where undefined; never NaN)."""
        summary = {}
        for scale, runs in self.per_seed.items():
            flat = [_flatten(r) for r in runs]
            summary[str(scale)] = {k: _stats([f[k] for f in flat]) for k in flat[0]}
        return finite_or_none(
            {
                "settings": asdict(self.settings),
                "summary": summary,
                "per_seed": {str(s): runs for s, runs in self.per_seed.items()},
                "mean_input_gradient_profile": {str(s): p for s, p in self.profiles.items()},
            }
        )


def weight_scale_study(
    settings: StudySettings, on_step: Callable[[], None] | None = None
) -> StudyResult:
    """Run the study: every seed, every scale; ``on_step`` is called after each pair."""
    result = StudyResult(settings)
    sums: dict[float, dict[str, Tensor]] = {}
    for seed in range(settings.seeds):
        cfg = study_config(settings, seed)
        task = make_task(cfg)
        seed_everything(seed)
        dtype = getattr(torch, settings.dtype)
        # Training mode: the gradients a training step would see.
        model = SequenceModel(cfg, task).to(dtype).train()
        x, y = task.batch("val", torch.arange(settings.batch_size))
        x = x.to(dtype)
        initial = {n: p.detach().clone() for n, p in model.named_parameters()}
        for scale in settings.scales:
            with torch.no_grad():
                for name, param in model.named_parameters():
                    is_recurrent = name.rsplit(".", 1)[-1].startswith("weight_hh")
                    param.copy_(initial[name] * scale if is_recurrent else initial[name])
            numbers, profiles = measure(model, task, x, y, settings.first, settings.end_steps)
            result.per_seed.setdefault(scale, []).append(numbers)
            norms = {path: profiles.norms[path]["x"] for path in profiles.norms}
            sums[scale] = {p: sums.get(scale, {}).get(p, 0) + n for p, n in norms.items()}
            if on_step is not None:
                on_step()
    result.profiles = {
        s: {p: (n / settings.seeds).tolist() for p, n in paths.items()} for s, paths in sums.items()
    }
    return result

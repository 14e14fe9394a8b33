"""The gradient paths of a trained run: its best checkpoint on a validation batch."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from hdetach.analysis.paths import gradient_paths
from hdetach.experiments.config import ConfigError
from hdetach.experiments.gradients.plots import plot_run_profiles
from hdetach.experiments.gradients.weight_scale import measure
from hdetach.experiments.run.checkpoint import load_trained
from hdetach.experiments.run.files import finite_or_none, write_json
from hdetach.experiments.run.folder import RunFolder
from hdetach.nn import LSTM


def analyze_run(
    run_dir: str | Path,
    out_dir: str | Path,
    batch_size: int = 100,
    first: int = 10,
    end_steps: int = 10,
    dtype: str = "float64",
) -> dict:
    """Measure the best checkpoint of ``run_dir`` on the first ``batch_size`` validation
    sequences (training mode, as a training step sees it, dropout drawn from seed 0); write
    analysis.json and profiles.png to ``out_dir`` and return the numbers. Any task's model
    works (a caption decoder too); the per-step profiles need an ``hdetach.LSTM`` in it."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    best = RunFolder(run_dir).best_checkpoint
    if not best.is_file():
        raise ConfigError(f"RUN_DIR {run_dir}: no {best.name} there (no evaluation yet?)")
    trained = load_trained(best)
    checkpoint, cfg, task = trained.checkpoint, trained.config, trained.task
    model = trained.model.to(getattr(torch, dtype)).train()
    x, y = task.batch("val", torch.arange(min(batch_size, task.size("val"))))
    x = _cast(x, getattr(torch, dtype))
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the dropout draws of the measurement: the same at every call
        if any(isinstance(m, LSTM) for m in model.modules()):
            numbers, profiles = measure(model, task, x, y, first, end_steps)
        else:  # per-step profiles follow an hdetach.LSTM's input; a cell loop: paths only
            paths = gradient_paths(model, lambda: task.loss_and_metrics(model(x), y)[0])
            numbers, profiles = {"groups": paths.summary()["groups"]}, None
    result = finite_or_none(
        {
            "run_dir": str(run_dir),
            "checkpoint": {
                "file": best.name,
                "step": checkpoint["step"],
                "best": checkpoint["best"],
            },
            "p_detach": cfg.p_detach,
            "batch": len(y),
            "first": first,
            "end_steps": end_steps,
            "dtype": dtype,
            **numbers,
            "profiles": None
            if profiles is None
            else {p: {q: n.tolist() for q, n in qs.items()} for p, qs in profiles.norms.items()},
        }
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "analysis.json", result)
    if profiles is not None:
        title = f"{run_dir.name} ({best.name}, step {checkpoint['step']}): gradient of the end loss"
        plot_run_profiles(result["profiles"], out_dir / "profiles.png", title)
    return result


def _cast(x, dtype: torch.dtype):
    """A task's model input with its floating-point tensors in ``dtype``: a tensor, or a
    dataclass of tensors (a caption batch)."""
    if isinstance(x, torch.Tensor):
        return x.to(dtype) if x.is_floating_point() else x
    if dataclasses.is_dataclass(x):
        fields = {f.name: _cast(getattr(x, f.name), dtype) for f in dataclasses.fields(x)}
        return dataclasses.replace(x, **fields)
    return x

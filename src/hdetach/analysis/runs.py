"""The gradient paths of a trained run: its best checkpoint on a validation batch."""

from __future__ import annotations

from pathlib import Path

import torch

from hdetach.analysis.plots import plot_run_profiles
from hdetach.analysis.study import measure
from hdetach.checkpoint import config_of, load_checkpoint
from hdetach.config import ConfigError
from hdetach.model import SequenceModel
from hdetach.runfiles import finite_or_none, write_json
from hdetach.tasks import make_task


def analyze_run(
    run_dir: str | Path,
    out_dir: str | Path,
    batch_size: int = 100,
    first: int = 10,
    end_steps: int = 10,
    dtype: str = "float64",
) -> dict:
    """Measure the best checkpoint of ``run_dir`` on the first ``batch_size`` validation
    sequences (training mode, as a training step sees it); write analysis.json and
    profiles.png to ``out_dir`` and return the numbers."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if not (run_dir / "best.pt").is_file():
        raise ConfigError(f"RUN_DIR {run_dir}: no best.pt there (no evaluation yet?)")
    checkpoint = load_checkpoint(run_dir / "best.pt")
    cfg = config_of(checkpoint, run_dir / "best.pt")
    task = make_task(cfg)
    model = SequenceModel(cfg, task)
    model.load_state_dict(checkpoint["model"])
    model = model.to(getattr(torch, dtype)).train()
    x, y = task.batch("val", torch.arange(min(batch_size, task.size("val"))))
    numbers, profiles = measure(model, task, x.to(getattr(torch, dtype)), y, first, end_steps)
    result = finite_or_none(
        {
            "run_dir": str(run_dir),
            "checkpoint": {
                "file": "best.pt",
                "step": checkpoint["step"],
                "best": checkpoint["best"],
            },
            "p_detach": cfg.p_detach,
            "batch": len(y),
            "first": first,
            "end_steps": end_steps,
            "dtype": dtype,
            **numbers,
            "profiles": {
                p: {q: n.tolist() for q, n in qs.items()} for p, qs in profiles.norms.items()
            },
        }
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "analysis.json", result)
    title = f"{run_dir.name} (best.pt, step {checkpoint['step']}): gradient of the end loss"
    plot_run_profiles(result["profiles"], out_dir / "profiles.png", title)
    return result

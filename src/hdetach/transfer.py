"""Transfer copying: evaluate a copy-task checkpoint at longer gaps T than it was trained on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hdetach.tasks.copying import CopyingTask
from hdetach.train import Config, ConfigError, SequenceModel, evaluate, load_checkpoint


def transfer(
    checkpoint: str | Path,
    Ts: list[int],
    n: int = 5000,
    seed: int = 1234,
    batch_size: int = 500,
    device: str = "cpu",
) -> dict[str, Any]:
    """Copy accuracy (last 10 steps) of the checkpoint's model at each T, on ``n`` fresh
    sequences per T drawn from ``seed``. Returns ``{"T": [...], "acc": [...], ...}``."""
    path = Path(checkpoint)
    if path.is_dir():
        path = path / "best.pt"
    if not path.is_file():
        raise ConfigError(f"CHECKPOINT {checkpoint}: no such checkpoint file or run directory")
    if not Ts or any(T < 1 for T in Ts):
        raise ConfigError(f"--T needs one or more positive lengths; got {Ts}")
    ckpt = load_checkpoint(path)
    cfg = Config(**ckpt["config"])
    if cfg.task != "copy":
        raise ConfigError(
            f"CHECKPOINT {checkpoint}: transfer needs a copy-task run, this one is {cfg.task!r}"
        )
    accs = []
    model = None
    for T in Ts:
        # Only a test split: n sequences from the transfer seed's own data stream, which
        # never coincides with the train/val streams of any training seed.
        task = CopyingTask(T, cfg.input_encoding, 0, 0, n, seed=seed)
        if model is None:
            model = SequenceModel(cfg, task)
            model.load_state_dict(ckpt["model"])
            model.to(device)
        accs.append(evaluate(model, task, "test", batch_size, device)["acc"])
    result = {
        "checkpoint": str(path),
        "train_T": cfg.T,
        "p_detach": cfg.p_detach,
        "step": ckpt["step"],
        "n": n,
        "seed": seed,
        "T": list(Ts),
        "acc": accs,
    }
    (path.parent / "transfer.json").write_text(json.dumps(result, indent=2) + "\n")
    return result

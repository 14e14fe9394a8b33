"""Transfer copying: evaluate a copy-task checkpoint at longer gaps T than it was trained on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hdetach.experiments.config import Config, ConfigError, check_device
from hdetach.experiments.run.checkpoint import load_trained
from hdetach.experiments.run.folder import RunFolder
from hdetach.experiments.tasks.copying import CopyingTask
from hdetach.experiments.train.loop import evaluate


def transfer(
    checkpoint: str | Path,
    Ts: list[int],
    n: int = 5000,
    seed: int = 1234,
    batch_size: int = 500,
    device: str = "cpu",
) -> dict[str, Any]:
    """Copy accuracy (last 10 steps) of the checkpoint's model at each T, on ``n`` fresh
    sequences per T drawn from ``seed``. Returns ``{"T": [...], "acc": [...], ...}`` and
    writes it to transfer.json beside the checkpoint."""
    path = Path(checkpoint)
    if path.is_dir():
        path = RunFolder(path).best_checkpoint
    if not path.is_file():
        raise ConfigError(f"CHECKPOINT {checkpoint}: no such checkpoint file or run directory")
    if not Ts or any(T < 1 for T in Ts):
        raise ConfigError(f"--T needs one or more positive lengths; got {Ts}")
    if n < 1 or batch_size < 1:
        raise ConfigError(f"--n and --batch-size must be >= 1; got {n} and {batch_size}")
    check_device(device)

    def test_at(T: int, cfg: Config) -> CopyingTask:
        # Only a test split: n sequences from the transfer seed's own data stream, which
        # never coincides with the train/val streams of any training seed.
        if cfg.task != CopyingTask.name:
            raise ConfigError(
                f"CHECKPOINT {checkpoint}: transfer needs a copy-task run, this one is {cfg.task!r}"
            )
        return CopyingTask(T, cfg.input_encoding, 0, 0, n, seed=seed)

    # The model does not depend on T: it is built once, with the first T's task.
    trained = load_trained(path, device, make=lambda cfg: test_at(Ts[0], cfg))
    cfg, ckpt, model = trained.config, trained.checkpoint, trained.model
    accs = [evaluate(model, test_at(T, cfg), "test", batch_size, device)["acc"] for T in Ts]
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
    RunFolder(path.parent).write_transfer(result)
    return result

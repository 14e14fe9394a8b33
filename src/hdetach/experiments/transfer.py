"""Transfer copying: evaluate a copy-task checkpoint at longer gaps T than it was trained on."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hdetach.experiments.config import Config, ConfigError, check_device
from hdetach.experiments.run.checkpoint import load_trained
from hdetach.experiments.run.files import write_json
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
        path = path / "best.pt"
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
        if cfg.task != "copy":
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
    write_json(path.parent / "transfer.json", result)
    return result


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """The ``hdetach transfer`` subcommand."""
    p = subparsers.add_parser(
        "transfer",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Transfer copying: accuracy of a trained copy model at other gap lengths T "
        "(fresh sequences). Writes transfer.json beside the checkpoint.",
        epilog="examples:\n  hdetach transfer runs/copy-T100-p0.5-s0-X --T 100 200 400 1000\n"
        "  hdetach transfer runs/copy-T100-p0.5-s0-X/best.pt --T 500 --n 1000\n",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a .pt file or a run dir (best.pt)")
    p.add_argument("--T", nargs="+", type=int, required=True, dest="Ts", help="gap lengths")
    p.add_argument("--n", type=int, default=5000, help="sequences per T (default 5000)")
    p.add_argument("--seed", type=int, default=1234, help="seed of the test sequences")
    p.add_argument("--batch-size", type=int, default=500, help="default 500")
    p.add_argument("--device", default="cpu", help="default cpu")
    p.set_defaults(run=_command)


def _command(a: argparse.Namespace) -> None:
    r = transfer(a.checkpoint, a.Ts, a.n, a.seed, a.batch_size, a.device)
    print(
        f"transfer of {r['checkpoint']} (trained at T={r['train_T']}, "
        f"p_detach={r['p_detach']:g}), {r['n']} sequences per T"
    )
    print("| T | accuracy |\n|---|---|")
    for T, acc in zip(r["T"], r["acc"], strict=True):
        print(f"| {T} | {acc:.4f} |")

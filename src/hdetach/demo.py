"""``hdetach demo``: a vanilla and an h-detach LSTM on the copying task, side by side.

Rerunnable: a finished run in the output folder is reused, an interrupted one resumed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from hdetach.config import Config, ConfigError, resolve

# The README's main command; chosen so the difference shows in under 10 minutes on 2 cores
# (see README, "What the demo shows").
DEMO = dict(
    task="copy",
    T=50,
    input_encoding="onehot",
    hidden_size=64,
    lr=1e-2,
    p_detach=0.5,
    epochs=40,
    steps_per_epoch=250,
    n_val=1000,
)
# Options that may differ between two runs of the same demo folder (where, not what).
_NOT_SETTINGS = ("run_dir", "device")


def demo_configs(out: Path, T: int, epochs: int, seed: int, p_detach: float) -> dict[str, Config]:
    """The two runs of the demo, by name: identical but for ``p_detach``."""
    base = {**DEMO, "T": T, "epochs": epochs, "seed": seed}
    return {
        name: resolve(Config(**{**base, "p_detach": p, "run_dir": str(out / name)}))
        for name, p in (("vanilla", 0.0), ("h-detach", p_detach))
    }


def cores_per_process(processes: int) -> int:
    """This process's share of the CPU cores it may run on."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // processes)


def _plan(cfg: Config) -> str:
    """What to do with a run's folder: "reuse" its summary, "resume" it, or "start" it."""
    run_dir = Path(cfg.run_dir)
    if not (run_dir / "config.json").is_file():
        return "start"
    try:
        saved = json.loads((run_dir / "config.json").read_text())
    except ValueError:
        saved = None
    wanted = {k: v for k, v in cfg.to_dict().items() if k not in _NOT_SETTINGS}
    differ = [k for k, v in wanted.items() if saved is None or saved.get(k) != v]
    if differ:
        had = ", ".join(f"{k} {saved.get(k) if saved else '?'}" for k in differ)
        asked = ", ".join(f"{k} {wanted[k]}" for k in differ)
        raise ConfigError(
            f"--out {run_dir.parent} holds a demo with other settings ({had}; asked: {asked}); "
            "pick another --out"
        )
    if (run_dir / "summary.json").is_file():
        return "reuse"
    return "resume" if (run_dir / "last.pt").is_file() else "start"


def _run(cfg: Config, plan: str, threads: int) -> dict[str, Any]:
    """One run, in a worker process."""
    import torch

    from hdetach.train import train

    torch.set_num_threads(threads)
    if plan == "reuse":
        return json.loads((Path(cfg.run_dir) / "summary.json").read_text())
    if plan == "resume":
        return train(resume=cfg.run_dir, progress=False)
    return train(cfg, progress=False)


def run_demo(out: Path, T: int, epochs: int, seed: int, p_detach: float) -> dict[str, dict]:
    """Train (or reuse, or resume) both runs in two processes; their summaries by name."""
    cfgs = demo_configs(out, T, epochs, seed, p_detach)
    plans = {name: _plan(cfg) for name, cfg in cfgs.items()}
    for name, plan in plans.items():
        if plan != "start":
            print(
                f"{name}: {'reusing the finished run' if plan == 'reuse' else 'resuming'} "
                f"in {cfgs[name].run_dir}"
            )
    total = next(iter(cfgs.values())).total_steps
    print(f"training {total} steps per model; progress lines with an ETA every minute", flush=True)
    # Two processes with half the cores each: small recurrent steps do not scale across
    # threads, so this is nearly twice as fast as running the two models one after the other.
    threads = cores_per_process(len(cfgs))
    if all(plan == "reuse" for plan in plans.values()):
        return {n: _run(c, "reuse", threads) for n, c in cfgs.items()}
    # Ctrl-C reaches both workers, which stop at a step boundary and save a checkpoint;
    # this process only waits for them and reports what they reached.
    old_handler = signal.signal(signal.SIGINT, lambda *_: None)
    try:
        with ProcessPoolExecutor(len(cfgs), mp_context=get_context("spawn")) as pool:
            futures = {n: pool.submit(_run, c, plans[n], threads) for n, c in cfgs.items()}
            return {n: f.result() for n, f in futures.items()}
    finally:
        signal.signal(signal.SIGINT, old_handler)


def table_row(name: str, s: dict[str, Any], total_steps: int) -> str:
    """One row of the comparison table: five cells whatever the run's status."""
    if s["status"] == "finished":
        cells = [
            f"{s['best_val']:.3f}",
            f"{s['best_epoch']:g}",
            f"{s['final_val']:.3f}",
            f"{s['test_at_best']['acc']:.3f}",
        ]
    elif s["status"] == "diverged":
        cells = [f"diverged at step {s['steps']}", "-", "-", "-"]
    else:
        cells = [f"interrupted at step {s['step']} of {total_steps}", "-", "-", "-"]
    return f"| {name} | " + " | ".join(cells) + " |"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """The ``hdetach demo`` subcommand."""
    p = subparsers.add_parser(
        "demo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="vanilla vs h-detach LSTM on the copying task",
        description="The project's point in one command: train a vanilla LSTM and an h-detach "
        "LSTM on the copying task side by side (same data, same seed), print the "
        "comparison and write the plot. About 5 to 7 minutes on a 2-core CPU. Run it "
        "again to see the table (finished runs are reused) or to continue after Ctrl-C.",
        epilog="examples:\n  hdetach demo\n  hdetach demo --T 100 --epochs 20 --out runs/demo100\n",
    )
    p.add_argument("--T", type=int, default=DEMO["T"], help=f"copy gap (default {DEMO['T']})")
    p.add_argument(
        "--p-detach",
        type=float,
        default=DEMO["p_detach"],
        help=f"h-detach probability (default {DEMO['p_detach']})",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=DEMO["epochs"],
        help=f"epochs of {DEMO['steps_per_epoch']} minibatches (default {DEMO['epochs']})",
    )
    p.add_argument("--seed", type=int, default=0, help="default 0")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.set_defaults(run=_command)


def _command(a: argparse.Namespace) -> None:
    from hdetach.report import report

    out = Path(a.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")
    t0 = time.time()
    summaries = run_demo(out, a.T, a.epochs, a.seed, a.p_detach)
    written = report([out / n for n in summaries], out)
    total = a.epochs * DEMO["steps_per_epoch"]
    print(
        f"\ncopying task, T={a.T}, {a.epochs} epochs x {DEMO['steps_per_epoch']} minibatches, "
        f"seed {a.seed}, {(time.time() - t0) / 60:.1f} min"
    )
    print("| model | best val acc | at epoch | final val acc | test acc at best |")
    print("|---|---|---|---|---|")
    for name, s in summaries.items():
        print(table_row(name, s, total))
    print(f"plot: {written['curves']}  (accuracy on the 10 copied symbols; chance is 0.125)")
    if any(s["status"] == "interrupted" for s in summaries.values()):
        print("interrupted: run the same command again to continue", file=sys.stderr)
        sys.exit(130)
    if any(s["status"] != "finished" for s in summaries.values()):
        sys.exit(1)

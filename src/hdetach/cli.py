"""The ``hdetach`` command: train, transfer, report, data, bench, demo, analyze."""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import time
from pathlib import Path

from hdetach.analysis import cli as analyze
from hdetach.analysis.tracking import TRACK_HELP
from hdetach.functional import BACKENDS, DETACH_PATHS
from hdetach.nn.lstm import DETACH_SCOPES
from hdetach.tasks.mnist import DataError
from hdetach.train import TASKS, Config, ConfigError

S = argparse.SUPPRESS


class _Parser(argparse.ArgumentParser):
    """Bad options exit with code 2 and one line (argparse's usage dump is left to --help)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _fmt() -> type:
    return argparse.RawDescriptionHelpFormatter


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

TRAIN_EXAMPLES = """examples:
  hdetach train copy --T 100 --p-detach 0.5                 # the paper's copying task
  hdetach train copy --T 100 --p-detach 0 --seed 1          # the vanilla LSTM baseline
  hdetach train mnist --data-dir ~/mnist --anneal-epochs 40 # pixel MNIST, h-detach off at the end
  hdetach train pmnist --perm-seed 0                        # permuted MNIST, fixed permutation
  hdetach train adding --T 200 --epochs 20
  hdetach train --resume runs/copy-T100-p0.5-s0-20260101-120000
"""

# Help for the training options; option names mirror the Config fields.
TRAIN_HELP = {
    "T": "copy: gap length (sequence T+20, default 100); adding: length (default 200)",
    "input_encoding": "copy input: the paper's raw scalar token or one-hot (default scalar)",
    "perm_seed": "pmnist: seed of the fixed pixel permutation, independent of --seed (default 0)",
    "data_dir": "MNIST folder (default $HDETACH_DATA/mnist or the user cache dir)",
    "hidden_size": "LSTM units (default: copy/adding 128, MNIST 100)",
    "num_layers": "LSTM layers (default 1)",
    "p_detach": "h-detach probability per step; 0 = vanilla LSTM (default 0.25)",
    "anneal_epochs": "switch h-detach off for the last K epochs (default 0)",
    "detach_scope": "one draw per step for the batch (the paper) or per sample",
    "detach_path": "h: h-detach; c: the c-detach ablation",
    "backend": "LSTM implementation (default auto)",
    "optimizer": "default adam",
    "lr": "learning rate (default 1e-3)",
    "clip": "gradient clipping by norm, by value, or none (default norm)",
    "clip_value": "the clipping threshold (default 1.0)",
    "batch_size": "default 100",
    "epochs": "default 200 (adding 50)",
    "steps_per_epoch": "copy/adding: minibatches per epoch (default 1000); MNIST: one pass",
    "max_steps": "train for at most this many steps in total (instead of whole epochs)",
    "eval_every": "steps between validations (default: once per epoch)",
    "eval_batch_size": "default 1000",
    "track_gradients": TRACK_HELP,
    "n_train": "training examples (copy/adding 100000 fixed sequences; MNIST first 50000)",
    "n_val": "validation examples (copy/adding 5000; MNIST the last 10000 training images)",
    "n_test": "test examples (default: as many as validation; MNIST the official 10000)",
    "seed": "seeds every generator (default 0)",
    "device": "auto (CUDA when present), cpu, cuda[:N]",
    "run_dir": "output directory (default runs/<task>-T<T>-<p>-s<seed>-<time>)",
}
CHOICES = {
    "input_encoding": ("scalar", "onehot"),
    "detach_scope": DETACH_SCOPES,
    "detach_path": DETACH_PATHS,
    "backend": BACKENDS,
    "optimizer": ("adam", "sgd", "rmsprop"),
    "clip": ("norm", "value", "none"),
}
# The option types come from the Config annotations ("int | None" -> int).
_TYPES = {
    f.name: {"int": int, "float": float}.get(str(f.type).split(" |")[0], str)
    for f in dataclasses.fields(Config)
}


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train one run",
        epilog=TRAIN_EXAMPLES,
        formatter_class=_fmt(),
        description="Train an LSTM on a task.",
    )
    p.add_argument("task", nargs="?", choices=TASKS, help="the task")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        default=S,
        help="continue an interrupted run from its last checkpoint (no other options)",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=S,
        help="progress bar (default: on a terminal only)",
    )
    for name, help_ in TRAIN_HELP.items():
        flag = "--T" if name == "T" else "--" + name.replace("_", "-")
        p.add_argument(
            flag,
            dest=name,
            type=_TYPES.get(name, str),
            choices=CHOICES.get(name),
            default=S,
            help=help_,
        )


def _cmd_train(a: argparse.Namespace) -> None:
    from hdetach.train import train

    opts = {k: v for k, v in vars(a).items() if k != "cmd"}
    task = opts.pop("task")
    progress = opts.pop("progress", None)
    resume = opts.pop("resume", None)
    if resume is not None:
        if opts or task:
            flags = ([task] if task else []) + [f"--{k.replace('_', '-')}" for k in opts]
            raise ConfigError(f"--resume takes the saved config; drop {', '.join(flags)}")
        summary = train(resume=resume, progress=progress)
    elif task is None:
        raise ConfigError("train needs a TASK (copy, adding, mnist, pmnist) or --resume RUN_DIR")
    else:
        summary = train(Config(task=task, **opts), progress=progress)
    if summary["status"] == "interrupted":
        sys.exit(130)


def _add_transfer(sub) -> None:
    p = sub.add_parser(
        "transfer",
        formatter_class=_fmt(),
        help="evaluate a copy checkpoint at longer T",
        description="Transfer copying: accuracy of a trained copy model at other gap lengths T "
        "(fresh sequences). Writes transfer.json beside the checkpoint.",
        epilog="examples:\n  hdetach transfer runs/copy-T100-p0.5-s0-X --T 100 200 400 1000\n"
        "  hdetach transfer runs/copy-T100-p0.5-s0-X/best.pt --T 500 --n 1000\n",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a .pt file or a run dir (best.pt)")
    p.add_argument("--T", nargs="+", type=int, required=True, dest="Ts", help="gap lengths")
    p.add_argument("--n", type=int, default=5000, help="sequences per T (default 5000)")
    p.add_argument("--seed", type=int, default=1234, help="seed of the test sequences")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--device", default="cpu")


def _cmd_transfer(a: argparse.Namespace) -> None:
    from hdetach.transfer import transfer

    if a.n < 1 or a.batch_size < 1:
        raise ConfigError("--n and --batch-size must be >= 1")
    r = transfer(a.checkpoint, a.Ts, a.n, a.seed, a.batch_size, a.device)
    print(
        f"transfer of {r['checkpoint']} (trained at T={r['train_T']}, "
        f"p_detach={r['p_detach']:g}), {r['n']} sequences per T"
    )
    print("| T | accuracy |\n|---|---|")
    for T, acc in zip(r["T"], r["acc"], strict=True):
        print(f"| {T} | {acc:.4f} |")


def _add_report(sub) -> None:
    p = sub.add_parser(
        "report",
        formatter_class=_fmt(),
        help="plots and a Markdown table from run dirs",
        description="Group runs into configurations (runs differing only by seed), plot the "
        "validation metric against epochs (mean, min-max band), transfer accuracy "
        "against T, and write a Markdown table of best/final metrics.",
        epilog="examples:\n  hdetach report runs/\n  hdetach report runs/a runs/b --out report/\n",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run dirs or folders of them")
    p.add_argument("--out", help="output folder (default: the first RUN_DIR)")


def _cmd_report(a: argparse.Namespace) -> None:
    from hdetach.report import report

    try:
        written = report(a.run_dirs, a.out or a.run_dirs[0])
    except FileNotFoundError as e:
        raise ConfigError(str(e)) from None
    print(written["table"].read_text())
    for kind, path in written.items():
        print(f"wrote {kind}: {path}")


def _add_data(sub) -> None:
    p = sub.add_parser(
        "data",
        formatter_class=_fmt(),
        help="fetch and verify data sets",
        description="Download (when missing) and verify MNIST by the MD5 of the "
        "decompressed IDX files.",
        epilog="examples:\n  hdetach data mnist\n"
        "  HDETACH_DATA=/data hdetach data mnist\n"
        "  hdetach data mnist --data-dir ../shared/data/mnist\n",
    )
    p.add_argument("dataset", choices=["mnist"])
    p.add_argument("--data-dir", help="default $HDETACH_DATA/mnist or the user cache dir")


def _cmd_data(a: argparse.Namespace) -> None:
    from hdetach.tasks.mnist import default_data_dir, load_mnist

    d = Path(a.data_dir) if a.data_dir else default_data_dir()
    arrays = load_mnist(d)
    sizes = ", ".join(f"{k} {v.shape}" for k, v in arrays.items())
    print(f"MNIST verified in {d}: {sizes}")


def _add_demo(sub) -> None:
    p = sub.add_parser(
        "demo",
        formatter_class=_fmt(),
        help="vanilla vs h-detach LSTM on the copying task",
        description="The project's point in one command: train a vanilla LSTM and an h-detach "
        "LSTM on the copying task side by side (same data, same seed), print the "
        "comparison and write the plot. About 5 to 7 minutes on a 2-core CPU.",
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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")


def _demo_run(cfg: Config, threads: int) -> dict:
    import torch

    from hdetach.train import train

    torch.set_num_threads(threads)
    return train(cfg, progress=False)


def _cmd_demo(a: argparse.Namespace) -> None:
    import os
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from hdetach.report import report
    from hdetach.train import resolve

    out = Path(a.out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out} is not empty; pick another folder or delete it")
    base = {k: v for k, v in DEMO.items() if k != "p_detach"}
    cfgs = {
        name: resolve(
            Config(
                **{
                    **base,
                    "T": a.T,
                    "epochs": a.epochs,
                    "seed": a.seed,
                    "p_detach": p,
                    "run_dir": str(out / name),
                }
            )
        )
        for name, p in (("vanilla", 0.0), ("h-detach", a.p_detach))
    }
    # Two processes with half the cores each: small recurrent steps do not scale across
    # threads, so this is nearly twice as fast as running the two models one after the other.
    threads = max(1, (os.cpu_count() or 2) // 2)
    t0 = time.time()
    # Ctrl-C reaches both workers, which stop at a step boundary and save a checkpoint;
    # this process only waits for them and reports what they reached.
    old_handler = signal.signal(signal.SIGINT, lambda *_: None)
    try:
        with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
            futures = {n: pool.submit(_demo_run, c, threads) for n, c in cfgs.items()}
            summaries = {n: f.result() for n, f in futures.items()}
    finally:
        signal.signal(signal.SIGINT, old_handler)
    minutes = (time.time() - t0) / 60
    written = report([out / n for n in cfgs], out)
    print(
        f"\ncopying task, T={a.T}, {a.epochs} epochs x {DEMO['steps_per_epoch']} minibatches, "
        f"seed {a.seed}, {minutes:.1f} min"
    )
    print("| model | best val acc | at epoch | final val acc | test acc at best |")
    print("|---|---|---|---|---|")
    for n, s in summaries.items():
        if s["status"] != "finished":
            print(f"| {n} | interrupted: resume with hdetach train --resume {s['run_dir']} |")
            continue
        print(
            f"| {n} | {s['best_val']:.3f} | {s['best_epoch']:g} | {s['final_val']:.3f} | "
            f"{s['test_at_best']['acc']:.3f} |"
        )
    print(f"plot: {written['curves']}  (accuracy on the 10 copied symbols; chance is 0.125)")
    if any(s["status"] != "finished" for s in summaries.values()):
        sys.exit(130)


def _add_bench(sub) -> None:
    sub.add_parser(
        "bench", help="speed table of the LSTM backends (see hdetach bench --help)", add_help=False
    )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # bench owns its options
        from hdetach.bench import main as bench_main

        bench_main(argv[1:])
        return
    parser = _Parser(
        prog="hdetach",
        formatter_class=_fmt(),
        description="h-detach LSTM experiments (Arpit et al., ICLR 2019).",
    )
    sub = parser.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    for add in (_add_demo, _add_train, _add_transfer, _add_report, _add_data, _add_bench):
        add(sub)
    analyze.add_parser(sub)
    a = parser.parse_args(argv)
    commands = {
        "demo": _cmd_demo,
        "train": _cmd_train,
        "transfer": _cmd_transfer,
        "report": _cmd_report,
        "data": _cmd_data,
        "analyze": analyze.run,
    }
    try:
        commands[a.cmd](a)
    except (ConfigError, DataError) as e:
        print(f"hdetach {a.cmd}: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

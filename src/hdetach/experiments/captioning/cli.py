"""``hdetach caption``: synth, features, train, eval and baseline subcommands."""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

import torch

from hdetach.experiments.captioning.data import read_karpathy
from hdetach.experiments.captioning.evaluate import blind_baseline, evaluate_run, print_metrics
from hdetach.experiments.captioning.features import StoreSettings, extract_features
from hdetach.experiments.captioning.models import MODELS
from hdetach.experiments.captioning.synth import make_synthetic
from hdetach.experiments.captioning.task import SPLIT_FILE, CaptionOptions
from hdetach.experiments.config import (
    Config,
    ConfigError,
    add_dataclass_options,
    check_device,
    check_float32,
    check_int64,
    check_threads,
    flag,
)
from hdetach.experiments.train.loop import train

EXAMPLES = """examples (the paper's COCO experiment; see docs/captioning.md):
  hdetach caption features ~/coco --images-root ~/coco/images --fp16
  hdetach caption train ~/coco --model showtell --p-detach 0.25 --val-images 1000
  hdetach caption train ~/coco --model attend --p-detach 0.4 --val-images 1000
  hdetach caption eval runs/caption-attend-p0.4-s0-... --split test --beam 2
  hdetach caption baseline ~/coco
on generated data, every step in minutes on a CPU:
  hdetach caption synth --out synth --images 3000
  hdetach caption features synth --backbone resnet18 --weights none --image-size 224
  hdetach caption train synth --model attend --hidden-size 128 --epochs 5
"""

# The authors' training protocol: Adam 1e-4, 10 images x 5 captions, clipping by value 0.1.
TRAINING = {  # option: (default, help)
    "hidden_size": (512, "LSTM units"),
    "batch_size": (10, "images per minibatch"),
    "epochs": (30, "training epochs"),
    "seed": (0, "seeds every generator"),
    "lr": (1e-4, "Adam learning rate"),
    "clip_value": (0.1, "gradients clipped to [-v, v]"),
}
DEFAULT_P = {"showtell": 0.25, "attend": 0.4}  # the paper's best per model


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "caption",
        description="Show & Tell and Show, Attend & Tell with h-detach on COCO-format data.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="caption_cmd", required=True, parser_class=type(p))
    for add in (_add_synth, _add_features, _add_train, _add_eval, _add_baseline):
        add(sub)


def _add_synth(sub) -> None:
    p = sub.add_parser("synth", help="generate a synthetic data set in the COCO/Karpathy formats")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--images", type=int, required=True, help="number of images")
    p.add_argument("--val", type=int, help="validation images (default 10%%)")
    p.add_argument("--test", type=int, help="test images (default 10%%)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_synth)


def _synth(a: argparse.Namespace) -> None:

    n_val = a.val if a.val is not None else max(1, a.images // 10)
    n_test = a.test if a.test is not None else max(1, a.images // 10)
    if a.images < 3 or n_val < 1 or n_test < 1:
        raise ConfigError("--images must be >= 3 and --val, --test >= 1")
    try:
        path = make_synthetic(a.out, a.images, n_val, n_test, a.seed)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    print(
        f"{a.images} images ({a.images - n_val - n_test} train, {n_val} val, {n_test} test): {path}"
    )


def _add_features(sub) -> None:
    p = sub.add_parser("features", help="CNN features of every image into a memory-mapped store")
    p.add_argument("data_dir", help="folder with dataset_coco.json")
    p.add_argument(
        "--images-root", help="folder the split file's paths start from (default DATA_DIR/images)"
    )
    p.add_argument("--out", help="the store (default DATA_DIR/features)")
    p.add_argument(
        "--backbone",
        default="resnet152",
        help="a torchvision ResNet-family model (default resnet152)",
    )
    p.add_argument(
        "--weights",
        default="imagenet",
        help="imagenet (torchvision's), none (random init) or a state-dict file",
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=448,
        help="images resized to this square (default 448: a 14x14 last map)",
    )
    p.add_argument(
        "--grid", type=int, default=14, help="regions per side of the spatial map (default 14)"
    )
    p.add_argument("--fp16", action="store_true", help="store float16 (half the size)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=4, help="DataLoader worker processes")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, help="progress bar (default on)"
    )
    p.set_defaults(run=_features)


def _device(device: str) -> str:

    check_device(device)
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def _features(a: argparse.Namespace) -> None:

    for name in ("image_size", "grid", "batch_size"):
        if getattr(a, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1; got {getattr(a, name)}")
    if a.workers < 0:
        raise ConfigError(f"--workers must be >= 0; got {a.workers}")
    data = Path(a.data_dir)
    images = read_karpathy(data / SPLIT_FILE)
    dtype = "float16" if a.fp16 else "float32"
    settings = StoreSettings(a.backbone, a.weights, a.image_size, a.grid, dtype)
    start = time.perf_counter()
    out = extract_features(
        images,
        a.images_root or data / "images",
        a.out or data / "features",
        settings,
        a.batch_size,
        a.workers,
        _device(a.device),
        a.progress,
    )
    print(f"features of {len(images)} images in {out} ({time.perf_counter() - start:.0f} s)")


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a captioning model through the project's training loop",
        description="Teacher forcing, cross-entropy, Adam; validation CIDEr each epoch selects "
        "the best model. Defaults are the authors' protocol.",
    )
    p.add_argument("data_dir", nargs="?", help="folder with dataset_coco.json and features/")
    p.add_argument(
        "--resume", metavar="RUN_DIR", help="continue an interrupted run (no other options)"
    )
    add_dataclass_options(p, CaptionOptions, {"model": MODELS})
    p.add_argument(
        "--p-detach",
        type=float,
        help="h-detach probability; 0: baseline (default showtell 0.25, attend 0.4)",
    )
    for name, (default, what) in TRAINING.items():
        p.add_argument(
            flag(name), type=type(default), default=default, help=f"{what} (default {default:g})"
        )
    p.add_argument("--train-images", type=int, help="use the first N training images (default all)")
    p.add_argument(
        "--val-images", type=int, help="validate on the first N val images (default all)"
    )
    p.add_argument("--max-steps", type=int, help="stop after this many minibatches")
    p.add_argument("--eval-every", type=int, help="steps between validations (default one epoch)")
    p.add_argument(
        "--anneal-epochs", type=int, default=0, help="h-detach off for the last K epochs"
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument(
        "--run-dir", help="output folder (default runs/caption-<model>-<p>-s<seed>-<time>)"
    )
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's choice)")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        help="progress bar (default: on a terminal)",
    )
    p.set_defaults(run=_train)


def caption_config(a: argparse.Namespace):
    """The training loop's Config of a captioning run from ``hdetach caption train``'s options."""

    given = {f.name: getattr(a, f.name) for f in fields(CaptionOptions) if hasattr(a, f.name)}
    opts = CaptionOptions(**given)
    for name in ("embed_size", "attention_size", "max_words", "captions_per_image", "val_beam"):
        if getattr(opts, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1; got {getattr(opts, name)}")
    if opts.min_count < 0 or not 0 <= opts.dropout < 1:
        raise ConfigError("--min-count must be >= 0 and --dropout in [0, 1)")
    check_float32("--dropout", opts.dropout)
    for name in ("embed_size", "attention_size", "max_words", "captions_per_image", "val_beam"):
        check_int64(flag(name), getattr(opts, name))
    check_int64("--min-count", opts.min_count)
    images = read_karpathy(Path(a.data_dir) / SPLIT_FILE)
    n = {s: sum(im.split == s for im in images) for s in ("train", "val", "test")}
    n_train, n_val = a.train_images or n["train"], a.val_images or n["val"]
    p = DEFAULT_P[opts.model] if a.p_detach is None else a.p_detach
    detach = "vanilla" if p == 0 else f"p{p:g}"
    name = f"caption-{opts.model}-{detach}-s{a.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Config(
        task="caption",
        data_dir=a.data_dir,
        task_options=asdict(opts),
        hidden_size=a.hidden_size,
        p_detach=p,
        anneal_epochs=a.anneal_epochs,
        lr=a.lr,
        clip="value",
        clip_value=a.clip_value,
        batch_size=a.batch_size,
        epochs=a.epochs,
        steps_per_epoch=math.ceil(n_train / max(a.batch_size, 1)),
        max_steps=a.max_steps,
        eval_every=a.eval_every,
        eval_batch_size=50,
        n_train=n_train,
        n_val=n_val,
        n_test=n["test"],
        seed=a.seed,
        device=a.device,
        run_dir=a.run_dir or str(Path("runs") / name),
    )


def _train(a: argparse.Namespace) -> None:

    check_threads(a.threads)
    if a.threads is not None:
        torch.set_num_threads(a.threads)
    if a.resume is not None:
        if a.data_dir is not None:
            raise ConfigError("--resume takes the saved config; drop DATA_DIR")
        summary = train(resume=a.resume, progress=a.progress)
    elif a.data_dir is None:
        raise ConfigError("caption train needs DATA_DIR or --resume RUN_DIR")
    else:
        summary = train(caption_config(a), progress=a.progress)
    if summary["status"] != "finished":
        sys.exit(130 if summary["status"] == "interrupted" else 1)


def _add_eval(sub) -> None:
    p = sub.add_parser(
        "eval", help="decode a split with the best model and score it (COCO toolkit)"
    )
    p.add_argument("run_dir")
    p.add_argument("--split", choices=("val", "test"), default="test")
    p.add_argument(
        "--beam", type=int, default=2, help="beam size (default 2, as the authors; 1: greedy)"
    )
    p.add_argument("--batch-size", type=int, default=50, help="images decoded together")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument(
        "--spice", action="store_true", help="also SPICE (needs Java and Stanford CoreNLP)"
    )
    p.set_defaults(run=_eval)


def _eval(a: argparse.Namespace) -> None:

    if a.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1; got {a.batch_size}")
    report = evaluate_run(a.run_dir, a.split, a.beam, a.batch_size, _device(a.device), a.spice)
    print_metrics(report)
    print(f"-> {Path(a.run_dir) / 'eval'}")


def _add_baseline(sub) -> None:
    p = sub.add_parser("baseline", help="score the best image-blind caption (one caption for all)")
    p.add_argument("data_dir", help="folder with dataset_coco.json")
    p.add_argument("--split", choices=("val", "test"), default="test")
    p.add_argument("--out", help="metrics JSON (default DATA_DIR/blind-baseline-<split>.json)")
    p.set_defaults(run=_baseline)


def _baseline(a: argparse.Namespace) -> None:

    out = a.out or Path(a.data_dir) / f"blind-baseline-{a.split}.json"
    report = blind_baseline(a.data_dir, a.split, out)
    print(f'image-blind caption: "{report["caption"]}"')
    print_metrics(report)

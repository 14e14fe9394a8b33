"""``hdetach caption`` carried out: each subcommand's options checked before any work,
then the data set generated, the features extracted, a model trained, evaluated, or the
image-blind baseline scored."""

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
from hdetach.experiments.captioning.options import CaptionOptions
from hdetach.experiments.captioning.synth import make_synthetic
from hdetach.experiments.captioning.task import SPLIT_FILE
from hdetach.experiments.config import (
    Config,
    ConfigError,
    check_device,
    check_float32,
    check_int64,
    check_threads,
    flag,
)
from hdetach.experiments.train.loop import train

DEFAULT_P = {"showtell": 0.25, "attend": 0.4}  # the paper's best per model


def run_synth(a: argparse.Namespace) -> None:

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


def _device(device: str) -> str:

    check_device(device)
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def run_features(a: argparse.Namespace) -> None:

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


def run_train(a: argparse.Namespace) -> None:

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


def run_eval(a: argparse.Namespace) -> None:

    if a.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1; got {a.batch_size}")
    report = evaluate_run(a.run_dir, a.split, a.beam, a.batch_size, _device(a.device), a.spice)
    print_metrics(report)
    print(f"-> {Path(a.run_dir) / 'eval'}")


def run_baseline(a: argparse.Namespace) -> None:

    out = a.out or Path(a.data_dir) / f"blind-baseline-{a.split}.json"
    report = blind_baseline(a.data_dir, a.split, out)
    print(f'image-blind caption: "{report["caption"]}"')
    print_metrics(report)

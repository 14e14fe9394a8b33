"""``hdetach caption``: synth, features, train, eval and baseline subcommands; their
options, declared torch-free (``command`` carries them out)."""

from __future__ import annotations

import argparse

from hdetach.experiments.captioning.options import MODELS, CaptionOptions
from hdetach.experiments.options import add_dataclass_options, flag

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
    p.set_defaults(run="hdetach.experiments.captioning.command:run_synth")


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
    p.set_defaults(run="hdetach.experiments.captioning.command:run_features")


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
    p.set_defaults(run="hdetach.experiments.captioning.command:run_train")


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
    p.set_defaults(run="hdetach.experiments.captioning.command:run_eval")


def _add_baseline(sub) -> None:
    p = sub.add_parser("baseline", help="score the best image-blind caption (one caption for all)")
    p.add_argument("data_dir", help="folder with dataset_coco.json")
    p.add_argument("--split", choices=("val", "test"), default="test")
    p.add_argument("--out", help="metrics JSON (default DATA_DIR/blind-baseline-<split>.json)")
    p.set_defaults(run="hdetach.experiments.captioning.command:run_baseline")

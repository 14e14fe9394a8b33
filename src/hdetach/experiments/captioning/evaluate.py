"""Evaluating a trained run on a split, and the image-blind baseline, in COCO formats.

``evaluate_run`` writes into RUN_DIR/eval/::

    {split}-references.json           the split's reference captions (COCO annotations)
    {split}-beam{k}-results.json      predictions [{"image_id": cocoid, "caption": ...}]
    {split}-beam{k}-metrics.json      BLEU-1..4, METEOR, ROUGE-L, CIDEr (+ notes)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from hdetach.experiments.captioning.data import (
    coco_annotations,
    read_coco_annotations,
    read_coco_results,
    read_karpathy,
)
from hdetach.experiments.captioning.metrics import (
    image_blind_caption,
    require_toolkit,
    score_captions,
)
from hdetach.experiments.captioning.task import SPLIT_FILE, CaptionTask
from hdetach.experiments.config import Config, ConfigError, check_device
from hdetach.experiments.run.checkpoint import load_trained
from hdetach.experiments.run.files import write_json
from hdetach.experiments.run.folder import RunFolder


def load_caption_run(run_dir: str | Path, device: str) -> tuple[Any, CaptionTask, torch.nn.Module]:
    """The run's config, task (all test images) and best-validation model in eval mode."""
    path = RunFolder(run_dir).best_checkpoint
    if not path.is_file():
        raise ConfigError(f"{run_dir}: no best.pt (not a captioning run, or not validated yet)")

    def every_test_image(cfg: Config) -> CaptionTask:
        if cfg.task != CaptionTask.name:
            raise ConfigError(f"{run_dir}: a {cfg.task} run, not a captioning run")
        counts = {"train": cfg.n_train, "val": None, "test": None}
        return CaptionTask(cfg.data_dir, CaptionTask.options_of(cfg), counts)

    trained = load_trained(path, device, make=every_test_image)
    return trained.config, trained.task, trained.model.eval()


def evaluate_run(
    run_dir: str | Path,
    split: str,
    beam: int,
    batch_size: int = 50,
    device: str = "cpu",
    spice: bool = False,
) -> dict[str, Any]:
    """Decode every image of ``split`` with beam size ``beam`` (1: greedy), write the
    predictions and references in COCO formats and score them with the toolkit."""
    if beam < 1:
        raise ConfigError(f"--beam must be >= 1; got {beam}")
    require_toolkit()
    check_device(device)
    cfg, task, model = load_caption_run(run_dir, device)
    out = Path(run_dir) / "eval"
    out.mkdir(exist_ok=True)
    refs_file = out / f"{split}-references.json"
    refs_file.write_text(json.dumps(coco_annotations(task.images[split])))
    preds = task.decode_split(model, split, batch_size, device, beam)
    results_file = out / f"{split}-beam{beam}-results.json"
    results = [{"image_id": i, "caption": c} for i, c in preds.items()]
    results_file.write_text(json.dumps(results))
    scores = score_files(refs_file, results_file, spice)
    report = {"run_dir": str(run_dir), "split": split, "beam": beam, **scores}
    write_json(out / f"{split}-beam{beam}-metrics.json", report)
    return report


def score_files(references: str | Path, results: str | Path, spice: bool = False) -> dict:
    """Score a COCO results file against a COCO annotations file (the images of both)."""
    return score_captions(read_coco_annotations(references), read_coco_results(results), spice)


def blind_baseline(data_dir: str | Path, split: str, out: str | Path) -> dict[str, Any]:
    """The image-blind baseline: the one caption chosen on the validation set (see
    ``image_blind_caption``), given for every image of ``split``, scored like a model."""

    require_toolkit()
    images = read_karpathy(Path(data_dir) / SPLIT_FILE)
    train = [" ".join(c) for im in images if im.split == "train" for c in im.captions]
    val_refs = {im.cocoid: [" ".join(c) for c in im.captions] for im in images if im.split == "val"}
    caption = image_blind_caption(train, val_refs)
    chosen = [im for im in images if im.split == split]
    refs = {im.cocoid: im.raw for im in chosen}
    scores = score_captions(refs, dict.fromkeys(refs, caption))
    report = {"data_dir": str(data_dir), "split": split, "caption": caption, **scores}
    write_json(out, report)
    return report


def print_metrics(report: dict[str, Any]) -> None:
    metrics = "  ".join(f"{k} {100 * v:.1f}" for k, v in report["metrics"].items())
    print(f"{report['split']} ({report['images']} images): {metrics}  (x100)")
    for note in report["notes"]:
        print(f"note: {note}", file=sys.stderr)

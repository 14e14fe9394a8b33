"""The captioning task behind the training loop's task interface.

A minibatch is ``batch_size`` images with ``captions_per_image`` captions each (the
authors' 10 x 5): the decoder reads the images once and teacher-forces every caption.
Validation adds CIDEr of the decoded captions over the whole (sub)split.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hdetach.experiments.captioning.data import (
    SPLITS,
    DataError,
    Image,
    Vocabulary,
    encode_captions,
    read_karpathy,
)
from hdetach.experiments.captioning.decode import PAD_ID, decode
from hdetach.experiments.captioning.features import FeatureStore
from hdetach.experiments.captioning.metrics import cider, require_toolkit
from hdetach.experiments.captioning.models import DecoderSizes, make_decoder
from hdetach.experiments.captioning.options import CaptionOptions
from hdetach.experiments.tasks.definitions import Captioning

SPLIT_FILE = "dataset_coco.json"


@dataclass
class CaptionBatch:
    """Model input: images (I, ...) features, inputs (B, L) word ids, image_of (B,)."""

    images: torch.Tensor
    inputs: torch.Tensor
    image_of: torch.Tensor

    def to(self, device: str | torch.device) -> CaptionBatch:
        return CaptionBatch(*(t.to(device) for t in dataclasses.astuple(self)))


def split_images(images: list[Image], counts: dict[str, int | None]) -> dict[str, list[Image]]:
    """The first ``counts[split]`` images of each split (None: all of them)."""
    out = {}
    for split in SPLITS:
        chosen = [im for im in images if im.split == split]
        n = counts.get(split)
        if n is not None and n > len(chosen):
            raise DataError(f"asked for {n} {split} images; the split file has {len(chosen)}")
        out[split] = chosen[:n]
    return out


class CaptionTask(Captioning):
    """The captioning task's data: the split file's images, their captions encoded in the
    vocabulary, and the feature store."""

    def __init__(self, data_dir: str | Path, opts: CaptionOptions, counts: dict[str, int | None]):
        require_toolkit()  # for the validation CIDEr
        self.opts = opts
        data_dir = Path(data_dir)
        all_images = read_karpathy(data_dir / SPLIT_FILE)
        self.vocab = Vocabulary.build(all_images, opts.min_count)
        self.images = split_images(all_images, counts)
        self.store = FeatureStore(opts.features or data_dir / "features")
        self.captions = {
            s: encode_captions(ims, self.vocab, opts.captions_per_image, opts.max_words)
            for s, ims in self.images.items()
        }
        self.rows = {
            s: self.store.rows([im.cocoid for im in ims]) for s, ims in self.images.items()
        }
        self.input_size, self.output_size = self.store.channels, len(self.vocab)
        self.shift, self.scale = 0.0, 1.0
        if opts.standardize:
            # From the training images' pooled vectors (the means of their regions), so
            # that a random network's features, whose channel offsets dwarf the
            # differences between images, reach the decoder on a common scale.
            pooled = np.asarray(self.store.pooled[np.sort(self.rows["train"])], dtype=np.float64)
            self.shift = pooled.mean(0).astype(np.float32)
            self.scale = (1 / (pooled.std(0) + 1e-6)).astype(np.float32)

    @classmethod
    def from_config(cls, cfg: Any) -> CaptionTask:
        counts = {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test}
        return cls(cfg.data_dir, cls.options_of(cfg), counts)

    @staticmethod
    def options_of(cfg: Any) -> CaptionOptions:
        return CaptionOptions(**(cfg.task_options or {}))

    def make_model(self, cfg: Any) -> torch.nn.Module:
        o = self.opts
        sizes = DecoderSizes(
            len(self.vocab),
            self.store.channels,
            o.embed_size,
            cfg.hidden_size,
            o.attention_size,
            o.dropout,
        )
        return make_decoder(o.model, sizes, cfg.p_detach)

    def size(self, split: str) -> int:
        return len(self.images[split])

    def features(self, split: str, idx: torch.Tensor) -> torch.Tensor:
        """The images' features as the model reads them: (I, C) or (I, R, C) float32."""
        rows = self.rows[split][idx.numpy()]
        array = self.store.spatial if self.opts.model == "attend" else self.store.pooled
        return torch.from_numpy(
            (np.asarray(array[rows], dtype=np.float32) - self.shift) * self.scale
        )

    def batch(self, split: str, idx: torch.Tensor) -> tuple[CaptionBatch, torch.Tensor]:
        tokens = torch.from_numpy(self.captions[split][idx.numpy()]).flatten(0, 1)  # (B, L+2)
        image_of = torch.arange(len(idx)).repeat_interleave(self.opts.captions_per_image)
        x = CaptionBatch(self.features(split, idx), tokens[:, :-1], image_of)
        return x, tokens[:, 1:]

    def loss_and_metrics(self, out, y):
        """out (B, L, V) logits, y (B, L) next words: cross-entropy over the caption tokens
        (<end> included, <pad> excluded) and the share of them predicted right."""
        loss = F.cross_entropy(out.flatten(0, 1), y.flatten(), ignore_index=PAD_ID)
        real = y != PAD_ID
        acc = ((out.argmax(-1) == y) & real).sum() / real.sum()
        return loss, {"loss": loss.detach(), "word_acc": acc.detach()}

    def decode_split(
        self, model, split: str, batch_size: int, device: str, beam: int
    ) -> dict[int, str]:
        """Captions of every image of ``split`` by cocoid (the model in eval mode)."""
        preds = {}
        for start in range(0, self.size(split), batch_size):
            idx = torch.arange(start, min(start + batch_size, self.size(split)))
            ids = decode(model, self.features(split, idx).to(device), beam, self.opts.max_words)
            for k, row in zip(idx.tolist(), ids.tolist()):
                preds[self.images[split][k].cocoid] = self.vocab.decode(row)
        return preds

    def references(self, split: str) -> dict[int, list[str]]:
        """Each image's tokenized reference captions (whole, not cut), space-joined."""
        return {im.cocoid: [" ".join(c) for c in im.captions] for im in self.images[split]}

    def corpus_metrics(self, model, split: str, batch_size: int, device: str) -> dict[str, float]:
        preds = self.decode_split(model, split, batch_size, device, self.opts.val_beam)
        return {"cider": cider(self.references(split), preds)}

"""The Karpathy split file, the vocabulary, and the COCO annotation and result formats.

``dataset_coco.json`` (Karpathy & Fei-Fei) lists every image once::

    {"images": [{"filepath": "val2014", "filename": "COCO_val2014_...jpg", "cocoid": 391895,
                 "split": "train" | "restval" | "val" | "test",
                 "sentences": [{"tokens": ["a", "man", ...], "raw": "A man ..."}, ...]}, ...]}

``restval`` images are training images (the usual 113,287 / 5,000 / 5,000 split).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hdetach.experiments.captioning.options import MAX_WORDS, MIN_COUNT
from hdetach.experiments.data.download import DataError

SPLITS = ("train", "val", "test")
PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)  # ids 0..3, in this order


@dataclass
class Image:
    """One image of the split file: where it is, its COCO id, its tokenized captions."""

    path: str  # "filepath/filename", relative to the image folder
    cocoid: int
    split: str  # "train" (restval included), "val" or "test"
    captions: list[list[str]]
    raw: list[str]


def read_karpathy(path: str | Path) -> list[Image]:
    """All images of a Karpathy split file, in file order, restval counted as train."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        images = [_image(entry) for entry in doc["images"]]
    except FileNotFoundError:
        raise DataError(f"{path}: no such file (expected a Karpathy dataset_coco.json)") from None
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not a Karpathy split file ({type(e).__name__}: {e})") from None
    if not images:
        raise DataError(f"{path}: lists no images")
    return images


def _image(entry: dict) -> Image:
    split = "train" if entry["split"] == "restval" else entry["split"]
    if split not in SPLITS:
        raise ValueError(f"image {entry['cocoid']} has split {entry['split']!r}")
    sentences = entry["sentences"]
    if not sentences:
        raise ValueError(f"image {entry['cocoid']} has no sentences")
    return Image(
        path=str(Path(entry.get("filepath", "")) / entry["filename"]),
        cocoid=int(entry["cocoid"]),
        split=split,
        captions=[[str(w).lower() for w in s["tokens"]] for s in sentences],
        raw=[s.get("raw", " ".join(s["tokens"])) for s in sentences],
    )


class Vocabulary:
    """Words seen more than ``min_count`` times in the training captions, after the four
    special tokens <pad> (0), <start> (1), <end> (2) and <unk> (3)."""

    def __init__(self, words: list[str]):
        self.words = list(SPECIALS) + [w for w in words if w not in SPECIALS]
        self.index = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def build(cls, images: list[Image], min_count: int = MIN_COUNT) -> Vocabulary:
        counts = Counter(w for im in images if im.split == "train" for c in im.captions for w in c)
        # Sorted by decreasing count, then alphabetically: the same file gives the same ids.
        kept = sorted(
            (w for w, n in counts.items() if n > min_count), key=lambda w: (-counts[w], w)
        )
        return cls(kept)

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, tokens: list[str], max_words: int = MAX_WORDS) -> list[int]:
        """<start> w1 .. wn <end> with n <= max_words; unknown words become <unk>."""
        unk = self.index[UNK]
        ids = [self.index.get(w, unk) for w in tokens[:max_words]]
        return [self.index[START], *ids, self.index[END]]

    def decode(self, ids: list[int]) -> str:
        """The words up to the first <end>, without <start> and <pad>."""
        words = []
        for i in ids:
            w = self.words[i]
            if w == END:
                break
            if w not in (START, PAD):
                words.append(w)
        return " ".join(words)


def encode_captions(
    images: list[Image], vocab: Vocabulary, per_image: int, max_words: int = MAX_WORDS
) -> np.ndarray:
    """(n_images, per_image, max_words + 2) int64 token ids, <pad>-filled. Images with more
    captions keep their first ``per_image``; images with fewer repeat theirs in turn."""
    out = np.zeros((len(images), per_image, max_words + 2), dtype=np.int64)
    for i, im in enumerate(images):
        for j in range(per_image):
            ids = vocab.encode(im.captions[j % len(im.captions)], max_words)
            out[i, j, : len(ids)] = ids
    return out


def coco_annotations(images: list[Image]) -> dict:
    """The images' reference captions in the COCO captions annotation format."""
    pairs = [(im.cocoid, caption) for im in images for caption in im.raw]
    anns = [{"id": k, "image_id": i, "caption": c} for k, (i, c) in enumerate(pairs)]
    return {
        "info": {"description": "reference captions from a Karpathy split file"},
        "licenses": [],
        "type": "captions",
        "images": [{"id": im.cocoid, "file_name": Path(im.path).name} for im in images],
        "annotations": anns,
    }


def read_coco_annotations(path: str | Path) -> dict[int, list[str]]:
    """Reference captions by image id from a COCO captions annotation file."""
    doc = _read_json(path, "a COCO captions annotation file")
    refs: dict[int, list[str]] = {int(im["id"]): [] for im in doc.get("images", [])}
    for ann in doc["annotations"]:
        refs.setdefault(int(ann["image_id"]), []).append(ann["caption"])
    return refs


def read_coco_results(path: str | Path) -> dict[int, str]:
    """Predicted captions by image id from a COCO results file ``[{"image_id", "caption"}]``."""
    doc = _read_json(path, "a COCO results file")
    if not isinstance(doc, list):
        raise DataError(f"{path}: a COCO results file is a JSON list")
    return {int(r["image_id"]): r["caption"] for r in doc}


def _read_json(path: str | Path, what: str):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: no such file (expected {what})") from None
    except ValueError as e:
        raise DataError(f"{path}: not JSON ({e})") from None

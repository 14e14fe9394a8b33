"""Small Karpathy-format fixtures for the captioning tests."""

from __future__ import annotations

import json

import pytest


def karpathy_entry(cocoid: int, split: str, captions: list[str], folder: str = "val2014") -> dict:
    return {
        "filepath": folder,
        "filename": f"COCO_{folder}_{cocoid:012d}.jpg",
        "cocoid": cocoid,
        "split": split,
        "sentences": [{"tokens": c.lower().split(), "raw": c} for c in captions],
    }


@pytest.fixture
def split_file(tmp_path):
    """Six images: two train, one restval, one val, two test; 'dog' is frequent."""
    dog = ["A dog runs", "a dog sits", "the dog runs", "a dog", "a big dog"]
    entries = [
        karpathy_entry(10, "train", dog),
        karpathy_entry(11, "train", dog),
        karpathy_entry(12, "restval", ["a cat sleeps"] * 5, folder="train2014"),
        karpathy_entry(13, "val", ["a dog runs fast"] * 5),
        karpathy_entry(14, "test", ["a red bus"] * 5),
        karpathy_entry(15, "test", ["two dogs play", "dogs play", "a dog", "dogs", "two dogs"]),
    ]
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps({"dataset": "coco", "images": entries}))
    return path

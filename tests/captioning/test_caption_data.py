"""The Karpathy split reader, the vocabulary rules and the COCO formats."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from hdetach.experiments.captioning.data import (
    SPECIALS,
    DataError,
    Vocabulary,
    coco_annotations,
    encode_captions,
    read_coco_annotations,
    read_coco_results,
    read_karpathy,
)


def test_karpathy_reader_counts_restval_as_train_and_keeps_paths(split_file):
    images = read_karpathy(split_file)
    assert [im.split for im in images] == ["train", "train", "train", "val", "test", "test"]
    assert images[2].path == "train2014/COCO_train2014_000000000012.jpg"
    assert images[0].cocoid == 10
    assert images[0].captions[0] == ["a", "dog", "runs"]  # lowercased tokens
    assert images[0].raw[0] == "A dog runs"


def test_karpathy_reader_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_karpathy(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": [{"cocoid": 1, "filename": "x.jpg", "split": "dev"}]}))
    with pytest.raises(DataError, match="not a Karpathy split file"):
        read_karpathy(bad)


def test_vocabulary_keeps_words_seen_more_than_min_count_in_training_only(split_file):
    images = read_karpathy(split_file)
    # train captions: 'dog' 10x, 'a' 6+5=11x, 'runs' 4x, 'cat'/'sleeps' 5x; val/test unseen.
    vocab = Vocabulary.build(images, min_count=5)
    assert vocab.words[:4] == list(SPECIALS)
    assert set(vocab.words[4:]) == {"a", "dog"}  # 'cat' (5x) is not *more* than 5
    assert set(Vocabulary.build(images, min_count=4).words[4:]) == {"a", "dog", "cat", "sleeps"}
    assert "runs" not in Vocabulary.build(images, min_count=4).words
    assert "fast" not in Vocabulary.build(images, min_count=0).words  # a val word


def test_encode_cuts_at_max_words_and_maps_unknown_words():
    vocab = Vocabulary(["a", "dog"])
    ids = vocab.encode(["a", "zebra", "dog"] * 10, max_words=16)
    assert len(ids) == 18  # <start> + 16 words + <end>
    assert ids[0] == 1 and ids[-1] == 2
    assert ids[2] == SPECIALS.index("<unk>")
    assert vocab.decode(ids[1:] + [0, 0]) == " ".join((["a", "<unk>", "dog"] * 6)[:16])


def test_encode_captions_pads_and_cycles_short_caption_lists(split_file):
    images = read_karpathy(split_file)[3:4]  # one image with 5 captions
    vocab = Vocabulary(["a", "dog", "runs", "fast"])
    out = encode_captions(images, vocab, per_image=7, max_words=3)
    assert out.shape == (1, 7, 5) and out.dtype == np.int64
    assert (out[0, 5] == out[0, 0]).all()  # the sixth caption is the first again
    assert vocab.decode(out[0, 0, 1:].tolist()) == "a dog runs"  # cut at 3 words


def test_coco_annotations_round_trip_and_load_in_pycocotools(split_file, tmp_path):
    images = read_karpathy(split_file)
    path = tmp_path / "captions_test.json"
    path.write_text(json.dumps(coco_annotations(images[4:])))
    assert read_coco_annotations(path) == {14: ["a red bus"] * 5, 15: images[5].raw}
    coco_module = pytest.importorskip("pycocotools.coco")
    coco = coco_module.COCO(str(path))
    assert sorted(coco.getImgIds()) == [14, 15]
    assert len(coco.getAnnIds(imgIds=[15])) == 5
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"image_id": 14, "caption": "a bus"}]))
    assert read_coco_results(results) == {14: "a bus"}
    assert coco.loadRes(str(results)).getImgIds() == [14]


def test_a_torchvision_that_does_not_load_is_one_clear_error(tmp_path, monkeypatch):
    """A torchvision built for another torch fails while it loads (not with ImportError):
    the feature extractor names the mismatch instead of passing on the traceback."""
    from hdetach.experiments.captioning.features import _torchvision_model

    fake = tmp_path / "torchvision"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        'raise RuntimeError("operator torchvision::nms does not exist")\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(DataError, match=r"torchvision does not load with torch .*nms does not"):
        _torchvision_model("resnet18", "none")

"""Caption metrics against hand computation and the toolkit's own COCOEvalCap."""

from __future__ import annotations

import json
import shutil

import pytest

from hdetach.experiments.captioning import metrics
from hdetach.experiments.captioning.data import coco_annotations, read_karpathy
from hdetach.experiments.captioning.evaluate import score_files

pytest.importorskip("pycocoevalcap")
needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="java not installed")

REFS = {1: ["a b e f"], 2: ["x y z w"]}
PREDS = {1: "a b c d", 2: "x y z w"}


def test_bleu1_and_rouge_by_hand_without_java(monkeypatch):
    """Image 1: 2 of 4 words match, LCS 2 of 4; image 2 matches. Corpus BLEU-1 = 6/8,
    ROUGE-L = mean(F_1.2(P=R=0.5) = 0.5, 1) = 0.75."""
    monkeypatch.setattr(metrics, "java_available", lambda: False)
    result = metrics.score_captions(REFS, PREDS)
    assert result["metrics"]["BLEU-1"] == pytest.approx(0.75, abs=1e-6)
    assert result["metrics"]["ROUGE-L"] == pytest.approx(0.75, abs=1e-6)
    assert "METEOR" not in result["metrics"]
    assert "java not found" in result["notes"][0]


def test_image_blind_caption_is_the_best_constant_caption():
    refs = {1: ["a red ball", "a red ball here"], 2: ["a red cube", "a red thing"]}
    train = ["a blue sky"] * 5 + ["a red ball"] * 3 + ["a red cube"] * 2
    best = metrics.image_blind_caption(train, refs)
    assert best in ("a red ball", "a red cube")
    others = [c for c in set(train) if c != best]
    assert all(
        metrics.cider(refs, dict.fromkeys(refs, best))
        >= metrics.cider(refs, dict.fromkeys(refs, c))
        for c in others
    )


@pytest.mark.slow  # four Java start-ups and METEOR: ~45 s on 2 busy cores
@needs_java
def test_metrics_equal_coco_eval_cap_on_the_same_files(split_file, tmp_path, monkeypatch):
    from pycocoevalcap import eval as coco_eval
    from pycocotools.coco import COCO

    class NoSpice:  # SPICE needs models downloaded at run time: left out of both
        def compute_score(self, gts, res):
            return 0.0, [0.0] * len(gts)

        def method(self):
            return "SPICE"

    images = read_karpathy(split_file)[3:]
    refs_file = tmp_path / "refs.json"
    refs_file.write_text(json.dumps(coco_annotations(images)))
    preds = [{"image_id": 13, "caption": "A dog runs."}, {"image_id": 14, "caption": "a bus"}]
    preds.append({"image_id": 15, "caption": "two dogs playing"})
    results_file = tmp_path / "results.json"
    results_file.write_text(json.dumps(preds))
    ours = score_files(refs_file, results_file)["metrics"]

    monkeypatch.setattr(coco_eval, "Spice", NoSpice)
    coco = COCO(str(refs_file))
    evaluator = coco_eval.COCOEvalCap(coco, coco.loadRes(str(results_file)))
    evaluator.evaluate()
    theirs = {k.replace("Bleu_", "BLEU-").replace("_", "-"): v for k, v in evaluator.eval.items()}
    theirs.pop("SPICE")
    assert ours == pytest.approx(theirs, abs=1e-9)
    assert set(ours) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"}

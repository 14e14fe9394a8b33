"""synth -> features -> train (through the one training loop) -> eval, from the command line."""

from __future__ import annotations

import json

import pytest
from helpers import require

from hdetach.experiments.cli import main

require("torchvision")
pytest.importorskip("pycocoevalcap")


@pytest.mark.slow
def test_synthetic_captioning_beats_the_image_blind_baseline(tmp_path, capsys):
    data, run = tmp_path / "synth", tmp_path / "run"
    main(["caption", "synth", "--out", str(data), "--images", "400", "--val", "40", "--test", "60"])
    main(["caption", "features", str(data), "--backbone", "resnet18", "--weights", "none",
          "--image-size", "128", "--grid", "4", "--workers", "0", "--no-progress"])  # fmt: skip
    main(["caption", "train", str(data), "--model", "attend", "--p-detach", "0.5", "--run-dir",
          str(run), "--hidden-size", "64", "--embed-size", "32", "--attention-size", "32",
          "--lr", "3e-3", "--epochs", "8", "--threads", "1", "--no-progress"])  # fmt: skip
    main(["caption", "eval", str(run), "--beam", "2", "--device", "cpu"])
    main(["caption", "baseline", str(data), "--out", str(tmp_path / "blind.json")])
    capsys.readouterr()
    model = json.loads((run / "eval" / "test-beam2-metrics.json").read_text())
    blind = json.loads((tmp_path / "blind.json").read_text())
    assert model["images"] == blind["images"] == 60
    results = json.loads((run / "eval" / "test-beam2-results.json").read_text())
    assert {r["image_id"] for r in results} == set(range(1, 61))
    assert model["metrics"]["CIDEr"] > blind["metrics"]["CIDEr"] + 0.3, (model, blind)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["metric"] == "cider"

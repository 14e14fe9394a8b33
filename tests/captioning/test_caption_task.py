"""The captioning task behind the training loop's interface, on a hand-written store."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hdetach.experiments.captioning.data import read_karpathy
from hdetach.experiments.captioning.task import CaptionOptions, CaptionTask
from hdetach.experiments.data.download import DataError

pytest.importorskip("pycocoevalcap")  # the task validates with its CIDEr


def write_store(folder, cocoids, channels=3, grid=2):
    """A finished feature store whose features encode the row number."""
    folder.mkdir()
    n = len(cocoids)
    pooled = np.arange(n, dtype=np.float32)[:, None].repeat(channels, 1)
    np.save(folder / "pooled.npy", pooled)
    np.save(folder / "spatial.npy", pooled[:, None, :].repeat(grid * grid, 1))
    np.save(folder / "done.npy", np.ones(n, dtype=bool))
    meta = {"backbone": "hand", "weights": "none", "image_size": 1, "grid": grid}
    (folder / "meta.json").write_text(
        json.dumps({**meta, "dtype": "float32", "channels": channels, "cocoids": cocoids})
    )


@pytest.fixture
def task(split_file):
    write_store(
        split_file.parent / "features", [im.cocoid for im in read_karpathy(split_file)][::-1]
    )
    opts = CaptionOptions(model="attend", min_count=0, max_words=3, captions_per_image=5)
    return CaptionTask(split_file.parent, opts, {"train": None, "val": None, "test": None})


def test_batch_is_images_times_captions_with_shifted_targets(task):
    x, y = task.batch("train", torch.tensor([2, 0]))
    assert x.images.shape == (2, 4, 3)
    # cocoid 12 is row 3 of the reversed store, cocoid 10 row 5
    assert x.images[:, 0, 0].tolist() == [3.0, 5.0]
    assert x.inputs.shape == (10, 4) and y.shape == (10, 4)
    assert x.image_of.tolist() == [0] * 5 + [1] * 5
    assert (x.inputs[:, 0] == 1).all()  # <start>
    torch.testing.assert_close(x.inputs[:, 1:], y[:, :-1])
    assert task.vocab.decode(y[5].tolist()) == "a dog runs"


def test_standardized_features_use_training_statistics(split_file):
    write_store(split_file.parent / "features", [15, 14, 13, 12, 11, 10])  # rows 5, 4, 3: train
    opts = CaptionOptions(model="showtell", min_count=0, standardize=True)
    task = CaptionTask(split_file.parent, opts, {})
    train = task.features("train", torch.arange(3))
    torch.testing.assert_close(train.mean(0), torch.zeros(3))
    torch.testing.assert_close(train.std(0, unbiased=False), torch.ones(3), atol=1e-5, rtol=0)
    expected = (1 - 4) / (2 / 3) ** 0.5  # test image value 1; train values 3, 4, 5
    assert task.features("test", torch.tensor([0]))[0, 0].item() == pytest.approx(
        expected, rel=1e-5
    )


def test_loss_ignores_padding(task):
    x, y = task.batch("test", torch.tensor([0]))  # "a red bus": no padding; cut to 3 words
    y = y.clone()
    y[:, -1] = 0  # pad the last position
    logits = torch.randn(5, 4, len(task.vocab), requires_grad=True)
    loss, metrics = task.loss_and_metrics(logits, y)
    (grad,) = torch.autograd.grad(loss, logits)
    assert grad[:, -1].abs().sum() == 0 and grad[:, 0].abs().sum() > 0
    assert set(metrics) == {"loss", "word_acc"}


def test_missing_features_and_too_many_images_are_clear_errors(split_file):
    write_store(split_file.parent / "features", [10, 11])
    with pytest.raises(DataError, match="no features for image 12"):
        CaptionTask(split_file.parent, CaptionOptions(), {})
    with pytest.raises(DataError, match="asked for 3 val images; the split file has 1"):
        CaptionTask(split_file.parent, CaptionOptions(), {"val": 3})


def test_captioning_trains_through_the_loop_and_resumes_exactly(split_file, monkeypatch):
    """An h-detach run interrupted by Ctrl-C and resumed ends with the metrics of an
    uninterrupted one: the detach draws come from the checkpointed generators."""
    import os
    import signal

    from hdetach.experiments.config import Config
    from hdetach.experiments.run.checkpoint import load_checkpoint
    from hdetach.experiments.train.loop import train

    write_store(split_file.parent / "features", [im.cocoid for im in read_karpathy(split_file)])
    opts = dict(model="attend", embed_size=6, attention_size=5, min_count=0, dropout=0.2)
    tiny = dict(
        task="caption", data_dir=str(split_file.parent), task_options=opts, hidden_size=8,
        p_detach=0.5, lr=1e-2, clip="value", clip_value=0.1, batch_size=2, epochs=3,
        steps_per_epoch=2, n_train=3, n_val=1, n_test=2, eval_batch_size=50, device="cpu",
    )  # fmt: skip
    full = train(Config(**tiny, run_dir=str(split_file.parent / "full")), progress=False)
    original, calls = CaptionTask.batch, [0]

    def interrupting_batch(self, split, idx):
        calls[0] += 1
        if calls[0] == 4:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, split, idx)

    monkeypatch.setattr(CaptionTask, "batch", interrupting_batch)
    part = train(Config(**tiny, run_dir=str(split_file.parent / "part")), progress=False)
    assert part["status"] == "interrupted"
    monkeypatch.setattr(CaptionTask, "batch", original)
    resumed = train(resume=split_file.parent / "part", progress=False)
    assert resumed["test_at_best"] == full["test_at_best"] and "cider" in full["test_at_best"]
    lines = [(split_file.parent / r / "metrics.jsonl").read_text() for r in ("full", "part")]
    drop_time = [
        [{k: v for k, v in json.loads(x).items() if k != "time"} for x in t.splitlines()]
        for t in lines
    ]
    assert drop_time[0] == drop_time[1]
    w_full = load_checkpoint(split_file.parent / "full" / "last.pt")["model"]
    w_part = load_checkpoint(split_file.parent / "part" / "last.pt")["model"]
    assert all(torch.equal(w_full[k], w_part[k]) for k in w_full)


def test_analyze_measures_a_trained_caption_model(split_file):
    """hdetach analyze on a captioning run: the gradient paths of its caption decoder (an
    LSTMCell loop, no per-step profile), equal to gradient_paths on the rebuilt model."""
    from hdetach.analysis import gradient_paths
    from hdetach.experiments.config import Config
    from hdetach.experiments.gradients.runs import analyze_run
    from hdetach.experiments.run.checkpoint import config_of, load_checkpoint
    from hdetach.experiments.tasks.registry import make_task
    from hdetach.experiments.train.loop import train

    write_store(split_file.parent / "features", [im.cocoid for im in read_karpathy(split_file)])
    opts = dict(model="attend", embed_size=6, attention_size=5, min_count=0, dropout=0.2)
    run = split_file.parent / "run"
    tiny = dict(
        task="caption", data_dir=str(split_file.parent), task_options=opts, hidden_size=8,
        p_detach=0.5, lr=1e-2, clip="value", clip_value=0.1, batch_size=2, epochs=1,
        steps_per_epoch=2, n_train=3, n_val=1, n_test=2, device="cpu", run_dir=str(run),
    )  # fmt: skip
    train(Config(**tiny), progress=False)
    result = analyze_run(run, run / "analysis", batch_size=5)
    assert result["profiles"] is None and (run / "analysis" / "analysis.json").is_file()

    checkpoint = load_checkpoint(run / "best.pt")
    cfg = config_of(checkpoint, run / "best.pt")
    task = make_task(cfg)
    model = task.make_model(cfg)
    model.load_state_dict(checkpoint["model"])
    model = model.double().train()
    x, y = task.batch("val", torch.arange(1))
    x = type(x)(x.images.double(), x.inputs, x.image_of)
    torch.manual_seed(0)
    summary = gradient_paths(model, lambda: task.loss_and_metrics(model(x), y)[0]).summary()
    assert result["groups"]["lstm"] == pytest.approx(summary["groups"]["lstm"], rel=1e-12)
    assert summary["groups"]["lstm"]["hidden"] > 0  # the decoder's h path is measured

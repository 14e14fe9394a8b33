"""Checkpoints survive a crash during a save; damaged ones are named, not raised raw."""

import pytest
import torch
from helpers import SMALLEST_COPY

from hdetach.experiments.run import checkpoint
from hdetach.experiments.run.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from hdetach.experiments.train.loop import Config, train

TINY = SMALLEST_COPY


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("ck") / "run"
    train(Config(**TINY, run_dir=str(d)), progress=False)
    return d


def test_a_crash_during_a_save_leaves_the_previous_checkpoint(run_dir, tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    before = load_checkpoint(run_dir / "last.pt")
    save_checkpoint(before, path)
    real_save = torch.save

    def crash_halfway(obj, f):
        real_save(obj, f)
        f.truncate(f.tell() // 2)  # half of it reached the disk
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", crash_halfway)
    changed = {**before, "step": 999}
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(changed, path)
    monkeypatch.undo()
    after = load_checkpoint(path)
    assert after["step"] == before["step"]
    assert all(torch.equal(after["model"][k], v) for k, v in before["model"].items())
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary left behind


def _damaged(run_dir, tmp_path, how):
    data = (run_dir / "last.pt").read_bytes()
    path = tmp_path / "last.pt"
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(b"not a checkpoint at all" * 10)
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "not a dict":
        torch.save([1, 2, 3], path)
    return path


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty", "not a dict"])
def test_a_damaged_checkpoint_is_one_clear_error(run_dir, tmp_path, how):
    path = _damaged(run_dir, tmp_path, how)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_a_checkpoint_of_another_version_is_named(run_dir, tmp_path):
    ck = load_checkpoint(run_dir / "last.pt")
    ck["config"]["hidden_units"] = ck["config"].pop("hidden_size")
    torch.save(ck, tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match="another version"):
        checkpoint.config_of(load_checkpoint(tmp_path / "last.pt"), tmp_path / "last.pt")

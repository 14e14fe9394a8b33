"""hdetach caption train refuses, like hdetach train, numbers its float32 tensors cannot hold."""

from __future__ import annotations

import pytest
from helpers import run_cli


@pytest.mark.parametrize(
    "options,message",
    [
        (["--lr", "1e300"], "--lr must be representable as float32"),
        (["--clip-value", "1e39"], "--clip-value must be representable as float32"),
        (["--p-detach", "1e-300"], "--p-detach must be representable as float32"),
        (["--dropout", "1e-300"], "--dropout must be representable as float32"),
        (["--embed-size", str(2**63)], "--embed-size must fit int64"),
        (["--seed", str(2**32)], "--seed must be in [0, 2**32 - 1]"),
    ],
)
def test_caption_train_refuses_what_float32_cannot_hold(
    split_file, tmp_path, capsys, options, message
):
    run_dir = tmp_path / "run"
    argv = ["caption", "train", str(split_file.parent), *options, "--run-dir", str(run_dir)]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert message in err
    assert not run_dir.exists()

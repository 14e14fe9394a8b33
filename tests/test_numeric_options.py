"""Numeric options that Python holds but the run's tensors cannot: refused before any work.

A float option reaches float32 tensors (the optimizer's step, the clipping threshold, the
detach draw), an int option int64 ones, the seeds NumPy's seeding (0 to 2**32 - 1). A
value the tensor cannot hold is refused in one line with exit code 2 and no run folder;
the largest values it can hold still give a result (here: a diverged run).
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from helpers import SMALLEST_COPY, run_cli

from hdetach.experiments.config import FLOAT32_MAX, Config, ConfigError, flag, resolve

pytestmark = pytest.mark.usefixtures("one_thread")

SMALLEST = [a for k, v in SMALLEST_COPY.items() if k != "task" for a in (flag(k), str(v))]

REFUSED = [
    (["--lr", "1e300", "--optimizer", "sgd"], "--lr must be representable as float32"),
    (["--lr", "1e-300"], "--lr must be representable as float32"),
    (["--lr", "3.4e38"], "--lr must be at most 3.4e.37 with --optimizer adam"),
    (["--clip", "value", "--clip-value", "1e300"], "--clip-value must be representable"),
    (["--clip-value", "1e39"], "--clip-value must be representable as float32"),
    (["--p-detach", "1e-300"], "--p-detach must be representable as float32"),
    (["--seed", str(2**32)], r"--seed must be in \[0, 2\*\*32 - 1\]"),
    (["--seed", "-1"], r"--seed must be in \[0, 2\*\*32 - 1\]"),
    (["--perm-seed", str(2**64)], r"--perm-seed must be in \[0, 2\*\*32 - 1\]"),
    (["--T", str(2**63)], "--T must fit int64"),
    (["--batch-size", str(10**30)], "--batch-size must fit int64"),
    (["--track-gradients", str(2**63)], "--track-gradients must fit int64"),
    # Sizes int64 holds but no machine's memory does (experiments/footprint.py):
    (["--hidden-size", str(10**9)], r"--hidden-size 1000000000 with --num-layers 1 needs "
     r"at least [0-9.e+]+ GiB \(model: .*\), more than the [0-9.]+ GiB of cpu"),
    (["--batch-size", str(10**11)], r"--batch-size 100000000000 x 23 steps \(--T 3\) x "
     r"--hidden-size 8 x --num-layers 1 needs at least .* \(activations"),
    (["--T", str(10**12)], r"x 1000000000020 steps \(--T 1000000000000\) .* \(activations"),
    (["--n-train", str(10**14)], r"--n-train 100000000000000, --n-val 20 and --n-test 20 "
     r"needs at least .* \(data"),
]  # fmt: skip


@pytest.mark.parametrize("options,message", REFUSED, ids=[" ".join(o) for o, _ in REFUSED])
def test_train_refuses_a_value_its_tensors_cannot_hold(tmp_path, capsys, options, message):
    run_dir = tmp_path / "run"
    argv = ["train", "copy", *SMALLEST, *options, "--run-dir", str(run_dir)]
    code, out, err = run_cli(argv, capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("hdetach train: error: ")
    assert re.search(message, err), err
    assert not run_dir.exists()  # refused before any work


@pytest.mark.parametrize(
    "options,status",
    [
        (["--lr", repr(FLOAT32_MAX * (1 - 0.9))], "diverged"),  # Adam's first step: lr / 0.1
        (["--lr", repr(FLOAT32_MAX), "--optimizer", "sgd"], "diverged"),
        (["--clip", "value", "--clip-value", repr(FLOAT32_MAX)], "finished"),
    ],
)
def test_the_largest_values_float32_holds_give_a_result(tmp_path, capsys, options, status):
    """At the limit the run starts and ends as a run does, with its summary."""
    run_dir = tmp_path / "run"
    argv = ["train", "copy", *SMALLEST, *options, "--run-dir", str(run_dir)]
    code, _, err = run_cli(argv, capsys)
    assert code == (0 if status == "finished" else 1), err
    assert json.loads((run_dir / "summary.json").read_text())["status"] == status


def test_subnormal_float32_values_are_accepted():
    """float32 holds down to 2**-149; only what rounds to 0 (or overflows) is refused."""
    resolve(Config(lr=2.0**-149, p_detach=1e-45, run_dir="unused"))
    with pytest.raises(ConfigError, match="--lr must be representable"):
        resolve(Config(lr=2.0**-151, run_dir="unused"))


@pytest.mark.parametrize(
    "grid,message",
    [
        ("lr=1e-3,1e300", "--lr must be representable as float32"),
        ("num_layers=1,1000000000000", "x --num-layers 1000000000000 needs at least"),
    ],
)
def test_sweep_grid_values_go_through_the_same_checks(tmp_path, capsys, grid, message):
    out = tmp_path / "sweep"
    argv = ["sweep", "copy", *SMALLEST, "--grid", grid, "--out", str(out)]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert message in err
    assert not out.exists()


@pytest.mark.parametrize(
    "body,message",
    [
        ("[grid]\nclip_value = [1.0, 1e300]", "--clip-value must be representable as float32"),
        ("[base]\np_detach = 1e-320", "--p-detach must be representable as float32"),
        ("seeds = [0, 4294967296]", r"--seed must be in \[0, 2\*\*32 - 1\]"),
        ("seeds = 2.5", "seeds must be a count or a list of ints"),
        ("seeds = [1.5]", "seeds must be a count or a list of ints"),
        ('seeds = "3"', "seeds must be a count or a list of ints"),
        ("seeds = -3", "seeds must be a count from 1 to 10000"),
        ("seeds = 4294967296", "seeds must be a count from 1 to 10000"),
        ("[grid]\nlr = 1e-3", r"\[grid\] lr must be a list of values"),
        ("base = 3", r"base must be a table \(\[base\]\)"),
    ],
)
def test_sweep_file_values_go_through_the_same_checks(tmp_path, capsys, body, message):
    out = tmp_path / "sweep"
    study = tmp_path / "study.toml"
    study.write_text(f'task = "copy"\nout = "{out}"\n{body}\n')
    code, _, err = run_cli(["sweep", str(study), *SMALLEST], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert re.search(message, err), err
    assert not out.exists()


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "copy", "--threads", str(2**31)], "--threads must be >= 1 and < 2**31"),
        (["sweep", "copy", "--threads", str(2**31)], "--threads must be >= 1 and < 2**31"),
        (["sweep", "copy", "--seeds", str(2**40)], "names more than 10000 seeds"),
    ],
)
def test_thread_and_seed_counts_beyond_what_torch_takes_are_refused(
    tmp_path, capsys, argv, message
):
    where = ["--run-dir" if argv[0] == "train" else "--out", str(tmp_path / "out")]
    code, _, err = run_cli([*argv, *SMALLEST, *where], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert message in err
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a CUDA machine triton can run")
def test_triton_backend_where_its_kernels_cannot_run_is_refused_before_any_work(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    run_dir = tmp_path / "run"
    argv = ["train", "copy", *SMALLEST, "--backend", "triton", "--run-dir", str(run_dir)]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "--backend triton: " in err and "CUDA" in err
    assert not run_dir.exists()

import json
import os
import signal
import sys
import types
from pathlib import Path

import pytest
import torch

from hdetach.cli import main

MNIST_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
needs_mnist = pytest.mark.skipif(not MNIST_DIR.is_dir(), reason=f"no MNIST in {MNIST_DIR}")

TINY = [
    "--T",
    "5",
    "--input-encoding",
    "onehot",
    "--hidden-size",
    "16",
    "--epochs",
    "2",
    "--steps-per-epoch",
    "10",
    "--n-train",
    "200",
    "--n-val",
    "100",
    "--batch-size",
    "20",
]


@pytest.fixture(autouse=True)
def one_thread():
    # These models are tiny: one thread is several times faster than two here (less
    # synchronisation per time step), which keeps the suite short on 2-core CI machines.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def run(argv, capsys):
    """main(argv) -> (exit code, stdout, stderr)."""
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_train_transfer_report_end_to_end(tmp_path, capsys):
    for p, seed in (("0", "0"), ("0", "1"), ("0.5", "0"), ("0.5", "1")):
        code, _, err = run(
            [
                "train",
                "copy",
                *TINY,
                "--p-detach",
                p,
                "--seed",
                seed,
                "--run-dir",
                str(tmp_path / "runs" / f"p{p}-s{seed}"),
            ],
            capsys,
        )
        assert code == 0, err
        assert "done: best val acc" in err
    run_dir = tmp_path / "runs" / "p0.5-s0"
    code, out, err = run(["transfer", str(run_dir), "--T", "5", "20", "--n", "50"], capsys)
    assert code == 0, err
    assert "| 5 |" in out and "| 20 |" in out
    t = json.loads((run_dir / "transfer.json").read_text())
    assert t["T"] == [5, 20] and len(t["acc"]) == 2 and all(0 <= a <= 1 for a in t["acc"])

    code, out, err = run(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "rep")], capsys)
    assert code == 0, err
    # two configurations of two seeds each
    assert "| vanilla | 2 |" in out and "| h-detach p=0.5 | 2 |" in out
    assert "Transfer copying accuracy" in out
    for name in ("curves.png", "transfer.png", "report.md"):
        assert (tmp_path / "rep" / name).stat().st_size > 0, name
    assert (tmp_path / "rep" / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_train_ctrl_c_then_resume_cli(tmp_path, capsys, monkeypatch):
    from hdetach.tasks import copying

    original = copying.CopyingTask.batch

    def interrupting_batch(self, split, idx):
        os.kill(os.getpid(), signal.SIGINT)
        return original(self, split, idx)

    monkeypatch.setattr(copying.CopyingTask, "batch", interrupting_batch)
    run_dir = str(tmp_path / "r")
    code, _, err = run(["train", "copy", *TINY, "--run-dir", run_dir], capsys)
    assert code == 130 and f"hdetach train --resume {run_dir}" in err  # says how to go on
    monkeypatch.setattr(copying.CopyingTask, "batch", original)
    code, _, err = run(["train", "--resume", run_dir], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["steps"] == 20
    code, _, err = run(["train", "copy", "--resume", run_dir], capsys)
    assert code == 2 and "--resume takes the saved config; drop copy" in err


def test_max_steps_caps_the_run(tmp_path, capsys):
    code, _, err = run(
        ["train", "copy", *TINY, "--max-steps", "7", "--run-dir", str(tmp_path / "r")], capsys
    )
    assert code == 0, err
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["steps"] == 7


@needs_mnist
def test_data_and_train_mnist(tmp_path, capsys):
    code, out, _ = run(["data", "mnist", "--data-dir", str(MNIST_DIR)], capsys)
    assert code == 0 and "MNIST verified" in out
    code, _, err = run(
        [
            "train",
            "pmnist",
            "--data-dir",
            str(MNIST_DIR),
            "--hidden-size",
            "8",
            "--epochs",
            "1",
            "--n-train",
            "40",
            "--n-val",
            "20",
            "--n-test",
            "20",
            "--batch-size",
            "20",
            "--run-dir",
            str(tmp_path / "m"),
        ],
        capsys,
    )
    assert code == 0, err
    s = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert s["task"] == "pmnist" and s["steps"] == 2


def test_bench_delegates_to_core(monkeypatch, capsys):
    seen = []
    monkeypatch.setitem(
        sys.modules, "hdetach.bench", types.SimpleNamespace(main=lambda argv: seen.append(argv))
    )
    assert run(["bench", "--quick"], capsys)[0] == 0
    assert seen == [["--quick"]]


@pytest.mark.parametrize(
    "argv, match",
    [
        (["train", "copy", "--p-detach", "2"], "--p-detach must be in [0, 1]"),
        (["train", "copy", "--clip", "max"], "argument --clip: invalid choice"),
        (["train", "copy", "--epochs", "x"], "argument --epochs: invalid int value"),
        (["train", "copy", "--bogus"], "unrecognized arguments: --bogus"),
        (["train"], "train needs a TASK"),
        (["train", "--resume", "/no/such/run"], "--resume /no/such/run: no last.pt"),
        (["train", "mnist", "--data-dir", "/no/such/dir", "--epochs", "1"], "MNIST"),
        (["transfer", "/no/such.pt", "--T", "10"], "CHECKPOINT /no/such.pt"),
        (["report", "/no/such/dir"], "RUN_DIR /no/such/dir"),
        (["data", "cifar"], "invalid choice"),
        ([], "required: cmd"),
    ],
)
def test_bad_options_and_paths_exit_2_with_one_line(argv, match, capsys, monkeypatch):
    import urllib.request

    def refuse(*a, **k):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    code, out, err = run(argv, capsys)
    assert code == 2
    assert err.count("\n") == 1 and match in err, err


@pytest.mark.parametrize("cmd", ["train", "transfer", "report", "data", "demo"])
def test_help_has_examples(cmd, capsys):
    code, out, _ = run([cmd, "--help"], capsys)
    assert code == 0 and "examples:" in out


def test_demo_end_to_end_on_a_tiny_setting(tmp_path, capsys):
    out = tmp_path / "demo"
    code, stdout, err = run(["demo", "--T", "2", "--epochs", "1", "--out", str(out)], capsys)
    assert code == 0, err
    assert "| vanilla |" in stdout and "| h-detach |" in stdout
    assert (out / "curves.png").is_file() and (out / "report.md").is_file()
    cfg = {n: json.loads((out / n / "config.json").read_text()) for n in ("vanilla", "h-detach")}
    assert cfg["vanilla"]["p_detach"] == 0 and cfg["h-detach"]["p_detach"] > 0
    # side by side on the same data, seed and everything else
    same = {k for k in cfg["vanilla"] if k not in ("p_detach", "run_dir")}
    assert all(cfg["vanilla"][k] == cfg["h-detach"][k] for k in same)
    code, _, err = run(["demo", "--out", str(out)], capsys)
    assert code == 2 and "is not empty" in err

import json
import os
import signal
import subprocess
import sys
import types

import pytest
import torch
from helpers import MNIST_DIR, SMALLEST_COPY, interrupt_at, needs_mnist
from helpers import run_cli as run

from hdetach.experiments.data import command as data

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


pytestmark = pytest.mark.usefixtures("one_thread")


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


def _unhandled(signum, frame):
    pytest.fail(f"{signal.Signals(signum).name} left to its default: the process would die")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_train_ctrl_c_then_resume_cli(tmp_path, capsys, monkeypatch, sig):
    # SIGTERM (a scheduler's stop) is taken as Ctrl-C
    from hdetach.experiments.tasks import copying

    original = copying.CopyingTask.batch

    def interrupting_batch(self, split, idx):
        os.kill(os.getpid(), sig)
        return original(self, split, idx)

    monkeypatch.setattr(copying.CopyingTask, "batch", interrupting_batch)
    run_dir = str(tmp_path / "r")
    previous = signal.signal(signal.SIGTERM, _unhandled)
    try:
        code, _, err = run(["train", "copy", *TINY, "--run-dir", run_dir], capsys)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert code == 130 and f"hdetach train --resume {run_dir}" in err  # says how to go on
    assert not (tmp_path / "r" / "summary.json").exists()
    monkeypatch.setattr(copying.CopyingTask, "batch", original)
    code, _, err = run(["train", "--resume", run_dir], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["steps"] == 20
    code, _, err = run(["train", "copy", "--resume", run_dir], capsys)
    assert code == 2 and "--resume takes the saved config; drop copy" in err


def test_sigterm_where_nothing_can_be_saved_ends_the_command_in_one_line(capsys, monkeypatch):

    monkeypatch.setattr(data, "run", lambda a: os.kill(os.getpid(), signal.SIGTERM))
    previous = signal.signal(signal.SIGTERM, _unhandled)
    try:
        code, _, err = run(["data", "mnist"], capsys)
        assert signal.getsignal(signal.SIGTERM) is _unhandled  # put back
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert code == 130 and err.strip() == "hdetach data: aborted"


def test_a_stop_request_takes_sigterm_as_ctrl_c_and_follows_a_forwarded_flag(capsys):
    import threading

    from hdetach.experiments.run.interrupt import StopRequest, follow

    with StopRequest("stopping") as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested
    assert "SIGTERM: stopping" in capsys.readouterr().err
    flag = threading.Event()
    follow(flag)
    try:
        with StopRequest("stopping", second_aborts=True) as stop:
            assert not stop.requested
            flag.set()  # the driver's stop, forwarded
            assert stop.requested
            os.kill(os.getpid(), signal.SIGINT)  # the terminal's Ctrl-C, straight here too
            with pytest.raises(KeyboardInterrupt):  # a second one aborts
                os.kill(os.getpid(), signal.SIGINT)
    finally:
        follow(None)


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
        sys.modules,
        "hdetach.experiments.bench.cli",
        types.SimpleNamespace(main=lambda argv: seen.append(argv)),
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
        (["train", "copy", "--p", "0.5"], "unrecognized arguments: --p"),
        (["demo", "--p", "0.5"], "unrecognized arguments: --p"),
        (["train", "copy", "--lr", "inf"], "--lr must be finite and > 0; got inf"),
        (["train", "copy", "--clip-value", "nan"], "--clip-value must be finite and > 0"),
        (["train", "copy", "--device", "cpux"], "--device must be auto, cpu or cuda[:N]"),
        (["train", "copy", "--threads", "0"], "--threads must be >= 1"),
        (["transfer", "/no/such.pt", "--T", "10", "--n", "0"], "CHECKPOINT /no/such.pt"),
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


def test_train_options_are_the_config_fields_with_their_types_and_defaults(capsys):
    import dataclasses

    from hdetach.experiments.options import Config, flag
    from hdetach.experiments.tasks.registry import TASKS

    code, out, _ = run(["train", "--help"], capsys)
    assert code == 0
    text = " ".join(out.split())
    for f in dataclasses.fields(Config):
        if f.name == "task" or "help" not in f.metadata:  # a positional; not options
            continue
        assert flag(f.name) in text, f.name
        if f.default is not None:
            shown = f"{f.default:g}" if isinstance(f.default, float) else f"{f.default}"
            assert f"(default {shown})" in text, f.name
    assert "(default copy 100, adding 200, mnist 784, pmnist 784)" in text  # --T
    assert TASKS["copy"].defaults["hidden_size"] == 128 and "copy 128" in text


def test_option_types_come_from_the_annotations_not_their_spelling():
    # A dataclass without postponed annotations: field types are classes, not strings.
    import argparse
    import dataclasses

    from hdetach.experiments.options import add_dataclass_options

    @dataclasses.dataclass
    class Options:
        count: int = dataclasses.field(default=1, metadata={"help": "a count"})
        rate: float | None = dataclasses.field(default=None, metadata={"help": "a rate"})
        name: str = dataclasses.field(default="x", metadata={"help": "a name"})

    parser = argparse.ArgumentParser()
    add_dataclass_options(parser, Options, {})
    a = parser.parse_args(["--count", "3", "--rate", "0.5", "--name", "7"])
    assert (a.count, a.rate, a.name) == (3, 0.5, "7")


def test_option_choices_are_the_modules_own_lists():
    import argparse

    from hdetach import functional
    from hdetach.experiments.train import cli as train
    from hdetach.nn import lstm

    parser = argparse.ArgumentParser()
    train.add_parser(parser.add_subparsers())
    sub = parser._subparsers._group_actions[0].choices["train"]
    choices = {a.dest: a.choices for a in sub._actions}
    assert choices["backend"] is functional.BACKENDS
    assert choices["detach_path"] is functional.DETACH_PATHS
    assert choices["detach_scope"] is lstm.DETACH_SCOPES
    assert choices["layer_masks"] is lstm.LAYER_MASKS


def test_layer_masks_option_reaches_the_model(tmp_path, capsys):
    code, _, err = run(
        [
            "train",
            "copy",
            *TINY,
            "--num-layers",
            "2",
            "--layer-masks",
            "independent",
            "--max-steps",
            "2",
            "--run-dir",
            str(tmp_path / "r"),
        ],
        capsys,
    )
    assert code == 0, err
    from hdetach.experiments.run.session import open_run

    assert open_run(None, tmp_path / "r").model.lstm.layer_masks == "independent"


def test_threads_option_sets_torch_threads(tmp_path, capsys, monkeypatch):
    seen = []
    monkeypatch.setattr(torch, "set_num_threads", seen.append)
    code, _, err = run(
        [
            "train",
            "copy",
            *TINY,
            "--threads",
            "3",
            "--max-steps",
            "1",
            "--run-dir",
            str(tmp_path / "r"),
        ],
        capsys,
    )
    assert code == 0, err
    assert seen == [3]


def test_run_dir_that_is_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    code, _, err = run(["train", "copy", *TINY, "--run-dir", str(tmp_path / "f")], capsys)
    assert code == 2 and err.count("\n") == 1 and "is a file" in err, err
    code, _, err = run(["train", "copy", *TINY, "--run-dir", str(tmp_path / "f" / "r")], capsys)
    assert code == 2 and err.count("\n") == 1 and "--run-dir" in err, err


def test_resume_says_where_it_starts(tmp_path, capsys, monkeypatch):
    interrupt_at(monkeypatch, 4)
    run_dir = tmp_path / "r"
    code, _, _ = run(["train", "copy", *TINY, "--run-dir", str(run_dir)], capsys)
    assert code == 130
    monkeypatch.undo()
    code, _, err = run(["train", "--resume", str(run_dir)], capsys)
    assert code == 0 and f"resuming {run_dir} at step 4 of 20" in err


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    from hdetach.experiments.train.loop import Config, train

    d = tmp_path_factory.mktemp("cli") / "run"
    train(Config(**SMALLEST_COPY, run_dir=str(d)), progress=False)
    return d


@pytest.mark.parametrize("damage", ["truncate", "unknown option"])
@pytest.mark.parametrize("command", ["resume", "transfer"])
def test_a_damaged_checkpoint_is_one_line_naming_it(
    finished_run, tmp_path, capsys, damage, command
):
    import shutil

    run_dir = tmp_path / "r"
    shutil.copytree(finished_run, run_dir)
    path = run_dir / ("last.pt" if command == "resume" else "best.pt")
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:1000])
    else:
        ck = torch.load(path, weights_only=True)
        ck["config"]["hidden_units"] = 8
        torch.save(ck, path)
    argv = (
        ["train", "--resume", str(run_dir)]
        if command == "resume"
        else ["transfer", str(path), "--T", "5"]
    )
    code, _, err = run(argv, capsys)
    assert code == 2 and err.count("\n") == 1 and str(path) in err, err
    assert ("truncated" if damage == "truncate" else "another version") in err


def _modules_loaded_by(argv: list[str]) -> set[str]:
    """The modules a fresh ``hdetach ARGV`` process has imported when it exits."""
    code = (
        "import sys\n"
        "from hdetach.experiments import cli\n"
        "try:\n"
        f"    cli.main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(' '.join(sys.modules), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return set(done.stderr.strip().splitlines()[-1].split())


NOTHING_HEAVY = {"scipy", "matplotlib", "hdetach.experiments.report", "hdetach.experiments.train"}


@pytest.mark.parametrize(
    "argv, not_loaded",
    [
        (["--help"], NOTHING_HEAVY),
        (["tran"], NOTHING_HEAVY),  # a mistyped subcommand
        (["train", "copy", "--lr", "x"], {"scipy", "matplotlib", "hdetach.experiments.report"}),
        (["report", "--help"], {"hdetach.experiments.train"}),
    ],
)
def test_help_and_option_errors_answer_before_loading_what_they_do_not_use(argv, not_loaded):
    # Only the chosen subcommand's module is imported: help, a mistyped subcommand or a bad
    # option does not wait for the rest of the lab (scipy, matplotlib, the loop...).
    loaded = _modules_loaded_by(argv)
    assert "hdetach.experiments.cli" in loaded
    assert not loaded & not_loaded, loaded & not_loaded

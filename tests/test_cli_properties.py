"""``hdetach train`` and ``hdetach sweep`` on option values drawn by Hypothesis.

Whatever the values, the command gives a result (a finished or diverged run with its
summary) or refuses in one line on stderr with exit code 2; it never ends in a
traceback. Train runs really train, one step of the smallest copying model, so that a
value the validation lets through must also work where it is used; the options whose
values set the amount of work draw small valid values (and any invalid ones), the
others any value at all. Sweeps stop where the runs would start (``run_sweep``
replaced): every run's config has then been checked, by the same validation as train.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path
from unittest import mock

import torch
from helpers import SMALLEST_COPY
from hypothesis import given, settings
from hypothesis import strategies as st

from hdetach.experiments.cli import main
from hdetach.experiments.config import CHOICES, flag
from hdetach.experiments.sweep.grid import NOT_CROSSABLE
from hdetach.experiments.sweep.runner import SweepResult
from hdetach.experiments.train.loop import train

SMALLEST = [a for k, v in SMALLEST_COPY.items() if k != "task" for a in (flag(k), str(v))]
PROPERTY = settings(max_examples=60, deadline=None, derandomize=True, database=None)

BEYOND_INT64 = st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**30]).map(str)
JUNK = st.text(max_size=6)
FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(
        ["1e300", "-1e300", "3.4e38", "3.5e38", "3.4e37", "1e-300", "1e-45", "1e-46", "-0.0"]
    ),
    st.integers(-(10**40), 10**40).map(str),
    JUNK,
)
ANY_INT = st.one_of(st.integers(-(2**70), 2**70).map(str), BEYOND_INT64, FLOATS, JUNK)
SMALL_INT = st.one_of(st.integers(-3, 40).map(str), BEYOND_INT64, JUNK)


def choice_of(name: str) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from([str(c) for c in CHOICES[name]]), JUNK)


# Every train option but --run-dir (each example gets its own) and the switches.
VALUES: dict[str, st.SearchStrategy[str]] = {
    "lr": FLOATS,
    "clip_value": FLOATS,
    "p_detach": FLOATS,
    # the amount of work: small valid values only
    "T": SMALL_INT,
    "hidden_size": SMALL_INT,
    "num_layers": SMALL_INT,
    "batch_size": SMALL_INT,
    "n_train": SMALL_INT,
    "n_val": SMALL_INT,
    "n_test": SMALL_INT,
    "max_steps": SMALL_INT,
    "threads": st.one_of(st.integers(-2, 2).map(str), BEYOND_INT64, JUNK),  # torch-global
    # no more work however large (one step is taken)
    "seed": ANY_INT,
    "perm_seed": ANY_INT,
    "epochs": ANY_INT,
    "steps_per_epoch": ANY_INT,
    "eval_every": ANY_INT,
    "eval_batch_size": ANY_INT,
    "anneal_epochs": ANY_INT,
    "track_gradients": ANY_INT,
    "device": st.one_of(
        st.sampled_from(["auto", "cpu", "cuda", "cuda:1", "cuda:-1", "cuda:" + "9" * 25]), JUNK
    ),
    "data_dir": JUNK,
    **{name: choice_of(name) for name in CHOICES if name != "task"},
}
OPTIONS = st.sampled_from(sorted(VALUES)).flatmap(lambda n: st.tuples(st.just(n), VALUES[n]))


def run_main(argv: list[str]) -> tuple[int, str]:
    """``hdetach argv`` in this process -> (exit code, stderr); torch's threads kept."""
    err, threads = io.StringIO(), torch.get_num_threads()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            main(argv)
        code = 0
    except SystemExit as e:
        code = e.code
    finally:
        torch.set_num_threads(threads)
    return code, err.getvalue()


def assert_one_line_refusal(err: str, command: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"hdetach {command}: error: "), err


@PROPERTY
@given(st.lists(OPTIONS, min_size=1, max_size=3))
def test_train_gives_a_result_or_one_line_and_exit_code_2(options):
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        given_ = [a for name, value in options for a in (flag(name), value)]
        argv = ["train", "copy", *SMALLEST, "--max-steps", "1", *given_]
        code, err = run_main([*argv, "--run-dir", str(run_dir)])
        if code == 2:
            assert_one_line_refusal(err, "train")
            assert not run_dir.exists()  # refused before any work
            return
        status = json.loads((run_dir / "summary.json").read_text())["status"]
        assert (code, status) in ((0, "finished"), (1, "diverged")), err


CROSSABLE = sorted(name for name in VALUES if name not in (*NOT_CROSSABLE, "threads", "data_dir"))
AXIS = st.sampled_from(CROSSABLE).flatmap(
    lambda n: st.tuples(st.just(n), st.lists(VALUES[n], min_size=1, max_size=2))
)
SEEDS = st.one_of(
    st.none(), st.integers(-1, 2).map(str), BEYOND_INT64, JUNK, st.lists(ANY_INT).map(",".join)
)


def train_each(runs: dict, *args, **kwargs) -> SweepResult:
    """In place of the sweep's engines: train every run of the plan here, one by one."""
    summaries = {name: train(cfg, progress=False) for name, cfg in runs.items()}
    return SweepResult(summaries=summaries)


@settings(PROPERTY, max_examples=30)
@given(st.lists(AXIS, min_size=1, max_size=2), SEEDS)
def test_sweep_grid_values_give_results_or_one_line_and_exit_code_2(axes, seeds):
    torch.set_num_threads(1)
    grid = [f"{name}={','.join(values)}" for name, values in axes]
    runner = "hdetach.experiments.sweep.command.run_sweep"
    with (
        tempfile.TemporaryDirectory() as tmp,
        mock.patch(runner, side_effect=train_each) as engines,
    ):
        out = Path(tmp) / "sweep"
        argv = ["sweep", "copy", *SMALLEST, "--max-steps", "1", "--out", str(out)]
        argv += [a for g in grid for a in ("--grid", g)]
        code, err = run_main(argv + ([] if seeds is None else ["--seeds", seeds]))
        if code == 2:
            assert_one_line_refusal(err, "sweep")
            assert not engines.called and not out.exists()
            return
        assert code == 0, err
        for run_dir in out.iterdir():
            if run_dir.is_dir():
                status = json.loads((run_dir / "summary.json").read_text())["status"]
                assert status in ("finished", "diverged"), run_dir.name

"""hdetach demo: a small study through the sweep engine, rerunnable, with an honest verdict."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import run_cli, signal_sweep_at_checkpoint

from hdetach.experiments.demo.cli import DEMO, DEMO_SEEDS
from hdetach.experiments.demo.command import demo_grid, print_transfer
from hdetach.experiments.demo.verdicts import balance_verdict, transfer_verdict, verdict
from hdetach.experiments.gradients.tracking import late_ratio
from hdetach.experiments.report.stats import compare
from hdetach.experiments.sweep.engines import run_one


def test_the_short_demo_runs_both_models_over_seeds_and_reruns_without_training(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["demo", "--short", "--out", str(out), "--jobs", "2"]
    code, stdout, err = run_cli(argv, capsys)
    assert code == 0, err
    best = {p: [] for p in (0.0, 0.5)}
    for seed in (0, 1):
        for p in best:
            run = out / f"p_detach={p!r},seed={seed}"
            summary = json.loads((run / "summary.json").read_text())
            assert summary["status"] == "finished"
            best[p].append(summary["best_val"])
            assert json.loads((run / "config.json").read_text())["p_detach"] == p
    lines = stdout.splitlines()
    own = lines.index(
        "| model | seeds | diverged | best val acc at T=5, mean ± std | median [min, max] |"
    )
    assert [r.split("|")[1].strip() for r in lines[own + 2 : own + 4]] == [
        "vanilla",
        "h-detach p=0.5",
    ]
    # the printed verdict is the one the numbers give, and never more
    said = lines[own + 4]
    assert said == verdict(best[0.0], best[0.5], "h-detach p=0.5", "best val acc at T=5")
    assert said.startswith("Within noise") == compare(best[0.5], best[0.0]).within_noise
    assert (out / "curves.png").is_file() and (out / "report.md").is_file()
    assert (out / "gradients.png").is_file()
    figures = [line for line in lines if line.startswith("curves: ")]
    assert len(figures) == 1 and f"gradients: {out / 'gradients.png'}" in figures[0]
    # the gradient balance of every run was tracked, and its comparison is the one printed
    late = {p: [late_ratio(out / f"p_detach={p!r},seed={s}") for s in (0, 1)] for p in best}
    assert all(r is not None and r > 0 for rs in late.values() for r in rs)
    assert balance_verdict(late[0.0], late[0.5], "h-detach p=0.5") in stdout
    _check_transfer(out, lines, best)

    mtimes = {
        p: p.stat().st_mtime for p in [*out.rglob("summary.json"), *out.rglob("transfer.json")]
    }
    code, again, err = run_cli(argv, capsys)
    assert code == 0 and "4 of 4 runs already done" in err
    assert "(200 fresh sequences per T): 0 to evaluate" in again
    assert again.splitlines()[own + 4 :] == lines[own + 4 :]  # the same tables and verdicts
    assert mtimes == {p: p.stat().st_mtime for p in mtimes}

    # a transfer.json made on other test sequences is not reused: only that run is redone
    stale = out / "p_detach=0.5,seed=1" / "transfer.json"
    record = json.loads(stale.read_text())
    stale.write_text(json.dumps({**record, "n": 100, "acc": [1.0, 1.0, 1.0]}))
    code, third, err = run_cli(argv, capsys)
    assert code == 0 and "0 fresh sequences per T): 1 to evaluate" in third
    assert json.loads(stale.read_text()) == record and "p_detach=0.5,seed=1: accuracy" in err
    assert third.splitlines()[own + 4 :] == lines[own + 4 :]

    code, _, err = run_cli(["demo", "--out", str(out)], capsys)
    assert code == 2 and "holds a sweep with other settings" in err and err.count("\n") == 1


def _check_transfer(out, lines, best):
    """Every run's best model was evaluated at 2T, 5T, 10T; the printed transfer table,
    per-T verdicts and headline are those of its transfer.json files."""
    Ts = [10, 25, 50]
    acc = {p: [] for p in best}
    for p in best:
        for seed in (0, 1):
            record = json.loads((out / f"p_detach={p!r},seed={seed}" / "transfer.json").read_text())
            summary = json.loads((out / f"p_detach={p!r},seed={seed}" / "summary.json").read_text())
            assert (record["T"], record["n"], record["train_T"]) == (Ts, 200, 5)
            assert record["step"] == summary["best_step"] and len(record["acc"]) == 3
            acc[p].append(record["acc"])
    head = lines.index("| model | T=10 | T=25 | T=50 |")
    for row, p in zip(lines[head + 2 : head + 4], best, strict=True):
        per_T = np.array(acc[p]).T  # (T, seed)
        cells = [f"{a.mean():.3f} ± {a.std(ddof=1):.3f}" for a in per_T]
        assert row == f"| {'vanilla' if p == 0 else 'h-detach p=0.5'} | " + " | ".join(cells) + " |"
    per_T = {T: ([a[i] for a in acc[0.0]], [a[i] for a in acc[0.5]]) for i, T in enumerate(Ts)}
    for i, T in enumerate(Ts):
        expected = verdict(*per_T[T], "h-detach p=0.5", f"accuracy at T={T}")
        assert lines[head + 4 + i] == f"T={T}: {expected}"
    assert lines[head + 7] == transfer_verdict(per_T, "h-detach p=0.5")
    # the headline: each seed's accuracy averaged over the three T, one comparison
    means = {p: [sum(a) / 3 for a in acc[p]] for p in best}
    headline = lines.index(
        "Headline, transfer accuracy averaged over T = 10, 25, 50, one value per seed:"
    )
    measure = "accuracy over T = 10, 25, 50"
    assert lines[headline + 1] == verdict(means[0.0], means[0.5], "h-detach p=0.5", measure)
    assert (out / "transfer.png").is_file()
    assert "Transfer copying accuracy by T" in (out / "report.md").read_text()


def test_ctrl_c_to_the_demo_stops_its_runs_and_the_same_command_finishes_them_exactly(
    tmp_path,
):
    # kill -INT to the demo's main process alone: its workers' runs stop too
    out = tmp_path / "demo"
    argv = [
        sys.executable, "-m", "hdetach", "demo", "--short", "--seeds", "1", "--jobs", "2",
        "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    first = out / "p_detach=0.0,seed=0"
    training = []  # the runs midway when the signal comes (on a loaded machine the other
    # worker's run may have finished before this one's first checkpoint)

    def note_runs_in_training():
        training.extend(p.parent for p in out.glob("*/last.pt"))
        training[:] = [run for run in training if not (run / "summary.json").exists()]

    code, err, left = signal_sweep_at_checkpoint(
        argv, env, first / "last.pt", signal.SIGINT, on_freeze=note_runs_in_training
    )
    assert not left, f"processes left running: {left}"
    assert code == 130 and "not finished: run the same command again to continue" in err
    assert first in training
    for run in training:  # each stopped midway, with its checkpoint, not finished
        assert "stopped at step" in (run / "train.log").read_text()
        assert not (run / "summary.json").exists()

    again = subprocess.run(argv, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "resuming" in (first / "train.log").read_text()
    # each run ends as the same run trained straight (one thread each, as with 2 jobs)
    for name, cfg in demo_grid(None, None, 1, 0.5, True).runs(tmp_path / "straight").items():
        straight = {k: v for k, v in run_one(cfg, 1).items() if k != "run_dir"}
        resumed = json.loads((out / name / "summary.json").read_text())
        assert {k: v for k, v in resumed.items() if k != "run_dir"} == straight


def test_the_verdict_never_claims_more_than_the_numbers():
    # 2 seeds each, fully separated: Mann-Whitney cannot go below p = 1/3
    assert verdict([0.1, 0.2], [0.8, 0.9], "h-detach").startswith("Within noise")
    # 6 seeds each, fully separated: exact p = 2 / C(12, 6) = 0.0022; means 0.825 - 0.1433
    said = verdict([0.1, 0.12, 0.15, 0.2, 0.18, 0.11], [0.8, 0.9, 0.85, 0.7, 0.75, 0.95], "h")
    assert said.startswith("h is better in this setting (h minus vanilla: +0.682")
    assert "Mann-Whitney p = 0.0022, 6 vs 6 seeds" in said
    assert verdict([0.1], [0.9, 0.8], "h").startswith("Too few finished seeds")
    said = verdict([0.1, 0.2], [0.8, 0.9], "h", "accuracy at T=20")
    assert "h minus vanilla: +0.700 in mean accuracy at T=20" in said


def test_the_transfer_headline_says_per_T_what_the_comparisons_say():
    low, high = [0.1, 0.12, 0.15, 0.2, 0.18, 0.11], [0.8, 0.9, 0.85, 0.7, 0.75, 0.95]
    noise = [0.09, 0.21, 0.13, 0.16, 0.12, 0.19]
    said = transfer_verdict({20: (low, high), 50: (low, high)}, "h")
    assert said.startswith("Transfer: h transfers better than vanilla at every T tested (20, 50)")
    said = transfer_verdict({20: (high, low), 50: (high, low)}, "h")
    assert said.startswith("Transfer: vanilla transfers better than h at every T tested (20, 50)")
    said = transfer_verdict({20: (low, noise), 50: (noise, low)}, "h")
    assert said.startswith("Transfer: within noise at every T tested (20, 50)")
    said = transfer_verdict({20: (low, high), 50: (low, noise), 100: (high, low)}, "h")
    assert said == (
        "Transfer, each T judged on its own: h better at T = 20; vanilla better at T = 100; "
        "within noise at T = 50."
    )
    # 5 vs 5 fully separated reaches p = 0.008; 2 vs 2 never leaves the noise
    assert transfer_verdict({20: ([0.1, 0.2], [0.8, 0.9])}, "h").startswith("Transfer: within")
    assert transfer_verdict({20: ([0.1], [0.8, 0.9])}, "h").startswith("Too few seeds")


def test_the_demo_setting_is_the_grid_it_runs(tmp_path):
    grid = demo_grid(None, None, DEMO_SEEDS, 0.5, short=False)
    runs = grid.runs(tmp_path)
    assert len(runs) == 2 * DEMO_SEEDS
    cfg = runs["p_detach=0.5,seed=4"]
    assert (cfg.T, cfg.hidden_size, cfg.lr, cfg.epochs) == (
        DEMO["T"], DEMO["hidden_size"], DEMO["lr"], DEMO["epochs"]
    )  # fmt: skip
    assert demo_grid(100, 3, 2, 0.25, short=False).runs(tmp_path)["p_detach=0.25,seed=1"].T == 100
    # another setting on another seed set, for design studies of the demo itself
    other = demo_grid(None, None, 2, 0.5, False, first_seed=5, hidden_size=128, lr=3e-3)
    assert other.seeds == [5, 6]
    cfg = other.runs(tmp_path / "other")["p_detach=0.5,seed=6"]
    assert (cfg.hidden_size, cfg.lr, cfg.T) == (128, 3e-3, DEMO["T"])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--seeds", "0"], "must be >= 1"),
        (["--jobs", "0"], "must be >= 1"),
        (["--first-seed", "-1"], "--first-seed must be >= 0"),
        (["--hidden-size", "0"], "--hidden-size must be finite and > 0"),
        (["--lr", "-1"], "--lr must be finite and > 0"),
    ],
)
def test_bad_demo_options_are_one_line(tmp_path, capsys, argv, message):
    code, _, err = run_cli(["demo", "--short", "--out", str(tmp_path / "d"), *argv], capsys)
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "d").exists()


def test_late_ratio_is_the_median_over_the_second_half(tmp_path):
    tracked = [{"step": t, "lstm": {"ratio": r}} for t, r in [(0, 9.0), (50, 1.0), (100, 3.0)]]
    tracked.append({"step": 150, "lstm": {"ratio": 2.0}})
    lines = [{"step": 100, "gradients": tracked[:3]}, {"step": 150, "gradients": tracked[3:]}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert late_ratio(tmp_path) == 2.5  # steps 100 and 150 are >= 150 / 2
    assert late_ratio(tmp_path / "missing") is None


def test_the_balance_verdict_compares_log_ratios_and_claims_no_more():
    assert balance_verdict([10.0, 20.0], [1.0, 2.0], "h").startswith("Gradient balance within")
    low, high = [0.5, 1.0, 0.8, 0.6, 0.9, 0.7], [30.0, 50.0, 40.0, 20.0, 60.0, 25.0]
    said = balance_verdict(high, low, "h")
    assert said.startswith("Gradient balance: h keeps the h path smaller")
    assert "Mann-Whitney p = 0.0022" in said
    assert balance_verdict(low, high, "h").startswith("Gradient balance: vanilla keeps")


def test_print_transfer_compares_every_h_detach_group_with_vanilla(capsys):
    def runs(accs):
        return [SimpleNamespace(transfer={"T": [20, 50], "acc": a}) for a in accs]

    vanilla = [[0.10, 0.12], [0.12, 0.13], [0.14, 0.11], [0.11, 0.12], [0.13, 0.14]]
    high = [[0.50, 0.40], [0.60, 0.45], [0.55, 0.50], [0.70, 0.42], [0.65, 0.48]]
    groups = {"vanilla": runs(vanilla), "h1": runs(high), "h2": runs(vanilla[::-1])}
    groups["h2"].append(SimpleNamespace(transfer={"T": [20, 100], "acc": [0.9, 0.9]}))
    print_transfer(groups, ["h1", "h2"], [20, 50])
    lines = capsys.readouterr().out.splitlines()
    assert lines[2:4] == ["| model | T=20 | T=50 |", "|---|---|---|"]
    assert lines[4] == "| vanilla | 0.120 ± 0.016 | 0.124 ± 0.011 |"
    assert lines[5] == "| h1 | 0.600 ± 0.079 | 0.450 ± 0.041 |"
    assert lines[6] == "| h2 | 0.120 ± 0.016 | 0.124 ± 0.011 |"  # the other-T run left out
    per_T = {T: ([a[i] for a in vanilla], [a[i] for a in high]) for i, T in enumerate([20, 50])}
    assert lines[7] == "T=20: " + verdict(*per_T[20], "h1", "accuracy at T=20")
    assert lines[9] == transfer_verdict(per_T, "h1")
    assert lines[9].startswith("Transfer: h1 transfers better than vanilla at every T")
    assert lines[12].startswith("Transfer: within noise at every T tested (20, 50)")


def test_the_demo_reports_progress_and_short_and_full_have_their_own_folders(
    tmp_path, capsys, monkeypatch
):
    """Progress lines while the runs train (every PROGRESS_SECONDS; here 0.05 s), and
    the default folders of --short and the full demo apart, so neither refuses the other."""
    from hdetach.experiments.demo import cli as demo
    from hdetach.experiments.demo import command
    from hdetach.experiments.sweep.grid import prepare

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(command, "PROGRESS_SECONDS", 0.05)
    code, stdout, err = run_cli(["demo", "--short", "--jobs", "1"], capsys)
    assert code == 0, err
    total = 4 * demo.SHORT["epochs"] * demo.SHORT["steps_per_epoch"]
    progress = [line for line in err.splitlines() if f" of {total:,} steps (" in line]
    assert progress, err
    assert (tmp_path / "runs" / "demo-short" / "report.md").is_file()
    assert not (tmp_path / "runs" / "demo").exists()
    prepare(Path("runs/demo"), demo_grid(None, None, DEMO_SEEDS, 0.5, False))  # no refusal

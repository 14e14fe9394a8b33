"""hdetach demo: a small study through the sweep engine, rerunnable, with an honest verdict."""

import json

import pytest
from helpers import run_cli

from hdetach.demo import DEMO, DEMO_SEEDS, demo_grid, verdict
from hdetach.stats import compare


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
    rows = [x for x in stdout.splitlines() if x.startswith("| ")]
    assert [r.split("|")[1].strip() for r in rows[1:]] == ["vanilla", "h-detach p=0.5"]
    # the printed verdict is the one the numbers give, and never more
    (said,) = [x for x in stdout.splitlines() if "minus vanilla" in x]
    assert said == verdict(best[0.0], best[0.5], "h-detach p=0.5")
    assert said.startswith("Within noise") == compare(best[0.5], best[0.0]).within_noise
    assert (out / "curves.png").is_file() and (out / "report.md").is_file()

    mtimes = {p: p.stat().st_mtime for p in out.rglob("summary.json")}
    code, again, err = run_cli(argv, capsys)
    assert code == 0 and "4 of 4 runs already done" in err
    assert [x for x in again.splitlines() if "minus vanilla" in x] == [said]
    assert mtimes == {p: p.stat().st_mtime for p in out.rglob("summary.json")}

    code, _, err = run_cli(["demo", "--out", str(out)], capsys)
    assert code == 2 and "holds a sweep with other settings" in err and err.count("\n") == 1


def test_the_verdict_never_claims_more_than_the_numbers():
    # 2 seeds each, fully separated: Mann-Whitney cannot go below p = 1/3
    assert verdict([0.1, 0.2], [0.8, 0.9], "h-detach").startswith("Within noise")
    # 6 seeds each, fully separated: exact p = 2 / C(12, 6) = 0.0022; means 0.825 - 0.1433
    said = verdict([0.1, 0.12, 0.15, 0.2, 0.18, 0.11], [0.8, 0.9, 0.85, 0.7, 0.75, 0.95], "h")
    assert said.startswith("h is better in this setting (h minus vanilla: +0.682")
    assert "Mann-Whitney p = 0.0022, 6 vs 6 seeds" in said
    assert verdict([0.1], [0.9, 0.8], "h").startswith("Too few finished seeds")


def test_the_demo_setting_is_the_grid_it_runs(tmp_path):
    grid = demo_grid(None, None, DEMO_SEEDS, 0.5, short=False)
    runs = grid.runs(tmp_path)
    assert len(runs) == 2 * DEMO_SEEDS
    cfg = runs["p_detach=0.5,seed=4"]
    assert (cfg.T, cfg.hidden_size, cfg.lr, cfg.epochs) == (
        DEMO["T"], DEMO["hidden_size"], DEMO["lr"], DEMO["epochs"]
    )  # fmt: skip
    assert demo_grid(100, 3, 2, 0.25, short=False).runs(tmp_path)["p_detach=0.25,seed=1"].T == 100


@pytest.mark.parametrize("argv", [["--seeds", "0"], ["--jobs", "0"]])
def test_bad_demo_options_are_one_line(tmp_path, capsys, argv):
    code, _, err = run_cli(["demo", "--short", "--out", str(tmp_path / "d"), *argv], capsys)
    assert code == 2 and "must be >= 1" in err and err.count("\n") == 1

"""hdetach demo: a small study through the sweep engine, rerunnable, with an honest verdict."""

import json

import pytest
from helpers import run_cli

from hdetach.analysis.tracking import late_ratio
from hdetach.demo import DEMO, DEMO_SEEDS, balance_verdict, demo_grid, verdict
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
    # the gradient balance of every run was tracked, and its comparison is the one printed
    late = {p: [late_ratio(out / f"p_detach={p!r},seed={s}") for s in (0, 1)] for p in best}
    assert all(r is not None and r > 0 for rs in late.values() for r in rs)
    assert balance_verdict(late[0.0], late[0.5], "h-detach p=0.5") in stdout

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

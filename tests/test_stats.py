"""Study statistics on fixed fake run folders, checked against values computed by hand."""

import json

import numpy as np
import pytest
from helpers import run_cli

from hdetach.experiments.report.report import report
from hdetach.experiments.report.runs import find_runs, group_runs
from hdetach.experiments.report.stats import Spread, compare, group_stats
from hdetach.experiments.report.study import (
    baselines,
    lr_p_table,
    one_run_per_seed,
    transfer_comparisons,
)
from hdetach.experiments.tasks.registry import metric_direction


def fake_run(
    path, curve, seed=0, p=0.0, lr=1e-3, status="finished", metric="acc", task="copy", test=None
):
    """A run folder whose validation metric follows ``curve``, one evaluation per epoch of
    10 steps (test at best: ``test``, else the best value); a diverged run stops after its
    curve."""
    path.mkdir(parents=True)
    cfg = {"task": task, "T": 10, "p_detach": p, "lr": lr, "seed": seed, "run_dir": str(path)}
    (path / "config.json").write_text(json.dumps(cfg))
    higher = metric != "mse"
    lines, best = [], None
    for i, v in enumerate(curve, 1):
        if best is None or (v > best if higher else v < best):
            best = v
        rec = {"step": 10 * i, "epoch": float(i), "metric": metric, "val": {metric: v}}
        lines.append(json.dumps({**rec, "best": {"value": best, "step": 10 * i}}))
    (path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    summary = {"status": status, "metric": metric, "steps": 10 * len(curve)}
    if status == "finished":
        summary["test_at_best"] = {metric: best if test is None else test}
    (path / "summary.json").write_text(json.dumps(summary))


def _vanilla_study(root):
    fake_run(root / "s0", [0.2, 0.5, 0.4], seed=0)  # best 0.5, never reaches 0.9
    fake_run(root / "s1", [0.3, 0.9, 0.95], seed=1)  # reaches 0.9 at step 20
    fake_run(root / "s2", [1.0, 1.0, 0.99], seed=2)  # at step 10
    fake_run(root / "s3", [0.95], seed=3, status="diverged")  # a seed, but no success


def test_group_statistics_match_hand_computed_values(tmp_path):
    _vanilla_study(tmp_path)
    (runs,) = group_runs(find_runs([tmp_path])).values()
    g = group_stats(runs, threshold=0.9, higher=True)
    assert (g.seeds, g.diverged, g.successes, g.success_rate) == (4, 1, 2, 0.5)
    assert sorted(g.steps_to_threshold) == [10, 20] and sorted(g.epochs_to_threshold) == [1, 2]
    best = Spread.of(g.best)  # 0.5, 0.95, 1.0
    assert best.mean == pytest.approx(0.816667, abs=1e-6)
    assert best.std == pytest.approx(0.275379, abs=1e-6)  # sample std, n - 1
    assert (best.median, best.min, best.max) == (0.95, 0.5, 1.0)
    final = Spread.of(g.final)  # 0.4, 0.95, 0.99
    assert (final.mean, final.std) == (pytest.approx(0.78), pytest.approx(0.329697, abs=1e-6))

    report([tmp_path], tmp_path / "out", threshold=0.9)
    md = (tmp_path / "out" / "report.md").read_text()
    assert (
        "| copy | 4 | 1 | 0.8167 ± 0.2754 | 0.9500 [0.5000, 1.0000] | 0.7800 ± 0.3297 | "
        "50% (2/4) | 15 (n=2) |" in md
    )


def test_lower_is_better_metrics_reach_a_threshold_from_above(tmp_path):
    fake_run(tmp_path / "a", [0.5, 0.02, 0.01], metric="mse", task="adding")
    fake_run(tmp_path / "b", [0.5, 0.3], seed=1, metric="mse", task="adding")
    (runs,) = group_runs(find_runs([tmp_path])).values()
    assert metric_direction("mse") is False and metric_direction("acc") is True
    g = group_stats(runs, threshold=0.05, higher=False)
    assert g.successes == 1 and g.steps_to_threshold == [20]
    assert sorted(g.best) == [0.01, 0.3]
    with pytest.raises(ValueError, match="unknown direction"):
        metric_direction("f1")


def test_a_repeated_seed_counts_once_with_a_warning(tmp_path, capsys):
    fake_run(tmp_path / "a", [0.5], seed=0)
    fake_run(tmp_path / "b", [0.9], seed=0)  # the same experiment again
    fake_run(tmp_path / "c", [0.7], seed=1)
    groups = one_run_per_seed(group_runs(find_runs([tmp_path])))
    assert [r.path.name for r in groups["copy"]] == ["a", "c"]
    err = capsys.readouterr().err
    assert "seed 0 in both" in err and err.count("\n") == 1
    report([tmp_path], tmp_path / "out")
    # seeds 0 and 1 once each: 0.5 and 0.7, mean 0.6, sample std 0.1 * sqrt(2)
    assert "| copy | 2 | 1 | 0.6000 ± 0.1414" in (tmp_path / "out" / "report.md").read_text()


def test_the_bootstrap_ci_covers_the_true_difference_and_both_tests_must_agree():
    rng = np.random.default_rng(1)
    a, b = rng.normal(1.0, 0.1, 40), rng.normal(0.8, 0.1, 40)
    c = compare(a, b)
    assert c.low < 0.2 < c.high and c.low > 0 and c.p < 0.05
    assert c.diff == pytest.approx(a.mean() - b.mean()) and c.verdict(True) == "better"
    assert c.verdict(False) == "worse"  # the same numbers for a lower-is-better metric
    same = compare(rng.normal(1.0, 0.1, 40), rng.normal(1.0, 0.1, 40))
    assert same.low < 0 < same.high and same.verdict(True).startswith("within noise")
    # Fully separated samples of 3: the exact Mann-Whitney p is 2/20 = 0.1, so even a
    # bootstrap CI away from 0 is not a claim.
    small = compare([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert small.diff == -3 and small.high < 0
    assert small.p == pytest.approx(0.1) and small.verdict(True) == "within noise (p = 0.1)"
    assert compare([1.0], [2.0, 3.0]) is None


def test_baselines_match_all_else_and_the_lr_by_p_table(tmp_path, capsys):
    for lr in (1e-3, 1e-2):
        for p in (0.0, 0.5):
            for seed in (0, 1):
                # success (>= 0.9) for h-detach at both rates, vanilla only seed 0 at 1e-2
                good = p > 0 or (lr == 1e-2 and seed == 0)
                fake_run(tmp_path / f"{lr}-{p}-{seed}", [0.5, 0.95 if good else 0.6], seed, p, lr)
    groups = one_run_per_seed(group_runs(find_runs([tmp_path])))
    assert baselines(groups) == {
        "h-detach p=0.5, lr=0.001": "vanilla, lr=0.001",
        "h-detach p=0.5, lr=0.01": "vanilla, lr=0.01",
    }
    per_group = {k: group_stats(v, 0.9, True) for k, v in groups.items()}
    assert lr_p_table(groups, per_group).splitlines()[2:] == [
        "| 0.001 | 0% | 100% |",
        "| 0.01 | 50% | 100% |",
    ]
    code, out, err = run_cli(
        ["report", str(tmp_path), "--out", str(tmp_path / "r"), "--threshold", "0.9"], capsys
    )
    assert code == 0, err
    assert (tmp_path / "r" / "success.png").is_file() and "wrote success" in out
    # two seeds each: Mann-Whitney cannot reach p < 0.05, so no claim is made
    assert (
        "- h-detach p=0.5, lr=0.001 vs vanilla, lr=0.001, best val acc: the difference (+0.3500) "
        "is within noise" in out
    )


def test_report_refuses_an_unknown_metric_direction_in_one_line(tmp_path, capsys):
    for seed in (0, 1):  # a task report.py knows nothing about
        fake_run(tmp_path / f"s{seed}", [0.5], seed, metric="f1", task="speech")
    code, _, err = run_cli(["report", str(tmp_path)], capsys)
    assert code == 2 and "give --direction" in err and err.count("\n") == 1
    code, out, _ = run_cli(["report", str(tmp_path), "--direction", "higher"], capsys)
    assert code == 0 and "## Study: f1" in out


def test_transfer_is_compared_with_the_baseline_at_each_T(tmp_path):
    # At T=20 every h-detach seed beats every vanilla seed (the exact Mann-Whitney p for
    # 5 vs 5 fully separated is 2 / C(10, 5) = 0.00794); at T=50 the two interleave.
    vanilla = {20: [0.1, 0.2, 0.3, 0.25, 0.15], 50: [0.1, 0.3, 0.5, 0.7, 0.9]}
    hdetach = {20: [0.6, 0.7, 0.8, 0.75, 0.65], 50: [0.2, 0.4, 0.6, 0.8, 1.0]}
    for p, accs in ((0.0, vanilla), (0.5, hdetach)):
        for seed in range(5):
            run = tmp_path / f"{p}-{seed}"
            fake_run(run, [0.5, 0.6], seed=seed, p=p)
            transfer = {"T": [20, 50], "acc": [accs[20][seed], accs[50][seed]]}
            (run / "transfer.json").write_text(json.dumps(transfer))
    groups = one_run_per_seed(group_runs(find_runs([tmp_path])))
    lines = transfer_comparisons(groups)
    row20 = next(x for x in lines if x.startswith("| h-detach p=0.5 | vanilla | 20 |"))
    assert "| +0.5000 |" in row20 and "| 0.00794 | better |" in row20
    row50 = next(x for x in lines if x.startswith("| h-detach p=0.5 | vanilla | 50 |"))
    assert "| +0.1000 |" in row50 and "within noise" in row50
    assert "- transfer, h-detach p=0.5 vs vanilla: better at T=20 (+0.500, p = 0.0079);" in (
        "\n".join(lines)
    )
    for run in tmp_path.glob("*/transfer.json"):
        run.unlink()
    assert transfer_comparisons(one_run_per_seed(group_runs(find_runs([tmp_path])))) == []


def test_another_baseline_is_named_by_option_and_value(tmp_path, capsys):
    # c-detach against h-detach, both at p = 0.5: no p_detach = 0 group, so by default no
    # comparison; --baseline detach_path=h compares c with h (3 vs 3 seeds, fully
    # separated: p = 2 / C(6, 3) = 0.1, within noise whatever the difference).
    for path, best in (("h", [0.9, 0.8, 0.7]), ("c", [0.2, 0.1, 0.15])):
        for seed, value in enumerate(best):
            run = tmp_path / f"{path}{seed}"
            fake_run(run, [0.1, value], seed=seed, p=0.5)
            cfg = json.loads((run / "config.json").read_text())
            (run / "config.json").write_text(json.dumps({**cfg, "detach_path": path}))
    code, out, err = run_cli(["report", str(tmp_path), "--out", str(tmp_path / "r")], capsys)
    assert code == 0 and "No comparisons: no p_detach = 0 group" in out, err
    argv = ["report", str(tmp_path), "--out", str(tmp_path / "r"), "--baseline", "detach-path=h"]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    assert "Against the baseline (detach_path = h, all else equal)" in out
    assert "| detach_path=c | detach_path=h | -0.6500 |" in out
    assert "| 0.1 | within noise (p = 0.1) |" in out
    for bad in ("detach_path", "colour=red", "seed=0", "=h"):
        code, _, err = run_cli(["report", str(tmp_path), "--baseline", bad], capsys)
        assert code == 2 and "--baseline takes OPTION=VALUE" in err and err.count("\n") == 1


def test_the_test_value_at_the_best_validation_is_compared_too(tmp_path):
    # best val alike (0.9 each), test at best apart: vanilla 0.80-0.82, h-detach 0.90-0.92
    for seed, (v, h) in enumerate([(0.80, 0.90), (0.81, 0.91), (0.82, 0.92)]):
        fake_run(tmp_path / f"v{seed}", [0.5, 0.9], seed=seed, test=v)
        fake_run(tmp_path / f"h{seed}", [0.5, 0.9], seed=seed, p=0.5, test=h)
    groups = group_runs(find_runs([tmp_path]))
    assert sorted(group_stats(groups["vanilla"], None, True).test) == [0.80, 0.81, 0.82]
    report([tmp_path], tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    assert "difference of the mean best val acc" in md
    assert "difference of the mean test acc at best val" in md
    assert "| h-detach p=0.5 | vanilla | +0.0000 |" in md  # best val
    # test: +0.1000, every h-detach seed above every vanilla one: Mann-Whitney p = 0.1,
    # the floor for 3 vs 3 seeds, so within noise however clear the CI
    (row,) = [r for r in md.splitlines() if r.startswith("| h-detach p=0.5 | vanilla | +0.1")]
    low, high = (float(x) for x in row.split("[")[1].split("]")[0].split(","))
    assert 0.08 < low < 0.1 < high < 0.12
    assert row.endswith("| 0.1 | within noise (p = 0.1) |")
    assert "h-detach p=0.5 vs vanilla, test acc at best val: the difference (+0.1000)" in md

import json

import pytest

from hdetach.experiments.cli import main
from hdetach.experiments.report import markdown_table, report
from hdetach.experiments.report_runs import find_runs, group_runs


def _fake_run(
    path, p, seed, accs, test_acc, transfer=None, task="copy", metric="acc", status="finished"
):
    path.mkdir(parents=True)
    cfg = {"task": task, "T": 10, "p_detach": p, "seed": seed, "run_dir": str(path)}
    (path / "config.json").write_text(json.dumps(cfg))
    best = 0.0
    lines = []
    for i, a in enumerate(accs):
        best = max(best, a)
        lines.append(
            json.dumps(
                {
                    "step": i + 1,
                    "epoch": i + 1.0,
                    "metric": metric,
                    "val": {metric: a, "loss": 1},
                    "best": {"value": best, "step": i + 1},
                }
            )
        )
    (path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    summary = {"status": status, "metric": metric, "steps": len(accs)}
    if status == "finished":
        summary["test_at_best"] = {metric: test_acc}
    (path / "summary.json").write_text(json.dumps(summary))
    if transfer:
        (path / "transfer.json").write_text(json.dumps({"T": [10, 20], "acc": transfer}))


def test_groups_by_configuration_and_aggregates_over_seeds(tmp_path):
    _fake_run(tmp_path / "a", 0.0, 0, [0.1, 0.3, 0.2], 0.25)
    _fake_run(tmp_path / "b", 0.0, 1, [0.1, 0.5, 0.4], 0.45)
    _fake_run(tmp_path / "c", 0.5, 0, [0.2, 0.6, 0.9], 0.85, transfer=[0.9, 0.5])
    groups = group_runs(find_runs([tmp_path]))
    assert sorted(groups) == ["h-detach p=0.5", "vanilla"]
    assert len(groups["vanilla"]) == 2
    table = markdown_table(groups)
    # vanilla: best 0.3 and 0.5 -> mean 0.4, sample std 0.1 * sqrt(2); final 0.2 and 0.4;
    # test 0.25 and 0.45
    assert "| vanilla | 2 | 3 | 0.4000 ± 0.1414 [0.3000, 0.5000] | 0.3000 ± 0.1414 " in table
    assert "| 0.3500 ± 0.1414 [0.2500, 0.4500] |" in table
    assert "| h-detach p=0.5 | 1 | 3 | 0.9000 | 0.9000 | 0.8500 |" in table
    assert "| h-detach p=0.5 | 0.9000 | 0.5000 |" in table  # transfer row
    written = report([tmp_path], tmp_path / "out")
    assert set(written) == {"curves", "transfer", "table"}


def test_missing_or_empty_run_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        find_runs([tmp_path / "nope"])
    with pytest.raises(FileNotFoundError, match="no run directories"):
        find_runs([tmp_path])


def test_diverged_runs_are_counted_listed_and_kept_out_of_the_statistics(tmp_path):
    _fake_run(tmp_path / "a", 0.5, 0, [0.1, 0.3], 0.25)
    _fake_run(tmp_path / "b", 0.5, 1, [0.1, 0.9], None, status="diverged")
    table = markdown_table(group_runs(find_runs([tmp_path])))
    assert "| copy | 2, 1 diverged | 2 | 0.3000 | 0.3000 | 0.2500 |" in table
    assert f"- {tmp_path / 'b'} at step 2" in table


def test_the_metric_is_the_one_each_run_recorded(tmp_path):
    # a task report.py knows nothing about: its metric comes from the run's files
    _fake_run(tmp_path / "a", 0.0, 0, [0.2, 0.7], 0.6, task="speech", metric="f1")
    _fake_run(tmp_path / "b", 0.5, 0, [0.4, 0.5], 0.3, task="speech", metric="f1")
    table = markdown_table(group_runs(find_runs([tmp_path])))
    assert table.startswith("Validation/test f1")
    assert "| vanilla | 1 | 2 | 0.7000 | 0.7000 | 0.6000 |" in table
    assert set(report([tmp_path], tmp_path / "out")) == {"curves", "table"}


@pytest.mark.parametrize(
    "stray",
    [
        '{"loss": 0.5, "iteration": 3}\n',  # another program's metrics.jsonl
        "step,loss\n1,0.5\n",  # not JSON at all
    ],
)
def test_a_directory_that_is_not_a_run_is_skipped_with_a_warning(tmp_path, capsys, stray):
    _fake_run(tmp_path / "good", 0.0, 0, [0.2, 0.3], 0.3)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"task": "copy"}')
    (tmp_path / "other" / "metrics.jsonl").write_text(stray)
    runs = find_runs([tmp_path])
    assert [r.path.name for r in runs] == ["good"]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"warning: skipping {tmp_path / 'other'}" in err


def test_a_damaged_summary_is_skipped_and_the_command_says_so(tmp_path, capsys):
    _fake_run(tmp_path / "good", 0.0, 0, [0.2, 0.3], 0.3)
    _fake_run(tmp_path / "cut", 0.5, 0, [0.2, 0.3], 0.3)
    (tmp_path / "cut" / "summary.json").write_text('{"status": "fini')
    main(["report", str(tmp_path), "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert "summary.json is not valid JSON" in err and "| copy | 1 |" in out

import json

import pytest
from helpers import axes_drawn_by

from hdetach.experiments.cli import main
from hdetach.experiments.report.report import report
from hdetach.experiments.report.runs import find_runs, group_runs
from hdetach.experiments.report.tables import at_epochs_table, markdown_table, reach_table


def _fake_run(
    path,
    p,
    seed,
    accs,
    test_acc,
    transfer=None,
    task="copy",
    metric="acc",
    status="finished",
    losses=None,
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
                    **({"train": {"loss": losses[i]}} if losses else {}),
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


def test_runs_whose_configs_have_different_options_are_grouped_by_them(tmp_path):
    # A run of another version lacks an option the others have, or has one more.
    _fake_run(tmp_path / "old", 0.0, 0, [0.1, 0.3], 0.25)
    _fake_run(tmp_path / "new", 0.0, 1, [0.1, 0.5], 0.45)
    config = json.loads((tmp_path / "new" / "config.json").read_text())
    (tmp_path / "new" / "config.json").write_text(json.dumps({**config, "clip": "norm"}))
    assert sorted(group_runs(find_runs([tmp_path]))) == ["clip=None", "clip=norm"]
    assert set(report([tmp_path], tmp_path / "out")) == {"curves", "table"}


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


def test_at_epochs_table_reads_each_run_at_its_last_evaluation_up_to_the_epoch(tmp_path):
    _fake_run(tmp_path / "a", 0.0, 0, [0.1, 0.3, 0.2], 0.25)
    _fake_run(tmp_path / "b", 0.0, 1, [0.1, 0.5], 0.45)  # unfinished: two epochs
    groups = group_runs(find_runs([tmp_path]))
    table = at_epochs_table(groups, [1, 1.5, 2, 3])
    # epoch 1: 0.1 and 0.1; epoch 1.5: the last evaluation before it (epoch 1); epoch 2:
    # 0.3 and 0.5; epoch 3: only run a got there
    one = "0.1000 ± 0.0000 [0.1000, 0.1000] (n=2)"
    assert f"| copy | {one} | {one} | 0.4000 ± 0.1414 [0.3000, 0.5000] (n=2) | 0.2000 |" in table


def test_report_cli_draws_references_and_the_at_epochs_table(tmp_path, capsys):
    _fake_run(tmp_path / "runs" / "a", 0.0, 0, [0.1, 0.3, 0.2], 0.25)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(["report", str(tmp_path / "runs"), "--out", str(out), "--reference", "paper=x"])
    assert e.value.code == 2 and "--reference takes LABEL=VALUE" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["report", str(tmp_path / "runs"), "--out", str(out), "--at-epochs", "0,2"])
    assert e.value.code == 2 and "--at-epochs takes positive numbers" in capsys.readouterr().err
    assert not out.exists()  # refused before any work
    args = ["--reference", "paper, h-detach=0.985", "--at-epochs", "2,1"]
    main(["report", str(tmp_path / "runs"), "--out", str(out), *args])
    assert "| configuration | epoch 1 | epoch 2 |" in (out / "report.md").read_text()


def test_reference_lines_are_drawn_and_named(tmp_path, monkeypatch):
    from hdetach.experiments.report import report as report_module

    drawn = axes_drawn_by(report_module, monkeypatch)
    _fake_run(tmp_path / "a", 0.0, 0, [0.1, 0.3, 0.2], 0.25)
    report_module.plot_curves(
        group_runs(find_runs([tmp_path])), tmp_path / "c.png", {"paper": 0.985}
    )
    labels = [line.get_label() for line in drawn[0].get_lines()]
    assert "paper (0.985)" in labels
    (line,) = [ln for ln in drawn[0].get_lines() if ln.get_label() == "paper (0.985)"]
    assert list(line.get_ydata()) == [0.985, 0.985]


def test_reach_table_counts_seeds_and_the_epochs_they_took(tmp_path):
    _fake_run(tmp_path / "a", 0.0, 0, [0.5, 0.92, 0.96], 0.9)  # 0.9 at epoch 2, 0.95 at 3
    _fake_run(tmp_path / "b", 0.0, 1, [0.91, 0.93, 0.94], 0.9)  # 0.9 at epoch 1, never 0.95
    _fake_run(tmp_path / "c", 0.0, 2, [0.2, 0.3, 0.4], 0.3)  # neither
    table = reach_table(group_runs(find_runs([tmp_path])), [0.9, 0.95], higher=True)
    assert "| configuration | reached ≥ 0.9 | epochs to 0.9 | reached ≥ 0.95 |" in table
    assert "| copy | 2/3 | 1.5 [1, 2] | 1/3 | 3 [3, 3] |" in table
    lower = reach_table(group_runs(find_runs([tmp_path])), [0.3], higher=False)
    assert "| copy | 1/3 | 1 [1, 1] |" in lower  # only run c, at 0.2 from epoch 1


def test_report_cli_refuses_a_malformed_reach_in_one_line(tmp_path, capsys):
    _fake_run(tmp_path / "runs" / "a", 0.0, 0, [0.1, 0.3, 0.2], 0.25)
    with pytest.raises(SystemExit) as e:
        main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "o"), "--reach", "nan"])
    assert e.value.code == 2 and "--reach takes numbers" in capsys.readouterr().err
    main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "o"), "--reach", "0.25"])
    assert "| copy | 1/1 | 2 [2, 2] |" in (tmp_path / "o" / "report.md").read_text()


def test_report_cli_refuses_runs_of_different_metrics_in_one_line(tmp_path, capsys):
    _fake_run(tmp_path / "runs" / "copy", 0.0, 0, [0.1, 0.3], 0.25)
    _fake_run(tmp_path / "runs" / "adding", 0.0, 0, [0.2, 0.1], 0.1, task="adding", metric="mse")
    with pytest.raises(SystemExit) as e:
        main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "the runs record different metrics (acc in 1, mse in 1 runs)" in err
    assert not (tmp_path / "o").exists()


def test_report_cli_refuses_runs_not_yet_evaluated_in_one_line(tmp_path, capsys):
    for seed in (0, 1):  # a sweep's runs that have just started: a config, no metrics
        run = tmp_path / "runs" / f"seed={seed}"
        run.mkdir(parents=True)
        (run / "config.json").write_text(json.dumps({"task": "copy", "seed": seed}))
    with pytest.raises(SystemExit) as e:
        main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "no run has been evaluated yet" in err


def test_runs_not_evaluated_yet_are_named_but_not_counted_as_seeds(tmp_path):
    for p in (0.0, 0.25):
        for seed in (0, 1):
            _fake_run(tmp_path / f"p{p}-s{seed}", p, seed, [0.5, 0.7 + p], 0.6)
        started = tmp_path / f"p{p}-s2"  # a seed just started: its config, nothing else
        started.mkdir()
        config = {"task": "copy", "T": 10, "p_detach": p, "seed": 2, "run_dir": str(started)}
        (started / "config.json").write_text(json.dumps(config))
    text = report([tmp_path], tmp_path / "r", stability=(0.5, 0.05))["table"].read_text()
    assert "| vanilla | 2 | 2 | 0.7000" in text  # two seeds, not three
    assert "| h-detach p=0.25 | 2 | 0 | 0 | 0 | 0 |" in text  # the stability count too
    assert "Not evaluated yet, so left out: 2 run(s) (p0.0-s2, p0.25-s2)." in text


def test_stability_counts_spikes_dips_and_divergences_against_the_baseline(tmp_path, capsys):
    from hdetach.experiments.report.runs import find_runs, group_runs
    from hdetach.experiments.report.stability import instability, stability_section

    steady = dict(accs=[0.5, 0.8, 0.9, 0.95], losses=[1.5, 0.6, 0.3, 0.2])
    # vanilla: one steady run, one whose loss rises 0.7 above its lowest (a spike) and
    # whose accuracy falls 0.3 below its best (a dip), one diverged
    _fake_run(tmp_path / "v0", 0.0, 0, test_acc=0.9, **steady)
    _fake_run(tmp_path / "v1", 0.0, 1, [0.5, 0.8, 0.5, 0.9], 0.9, losses=[1.5, 0.5, 1.2, 0.4])
    _fake_run(tmp_path / "v2", 0.0, 2, [0.5], None, status="diverged", losses=[1.5])
    for seed in range(3):  # h-detach: steady, but for a 0.04 dip (below the 0.05 line)
        _fake_run(
            tmp_path / f"h{seed}",
            0.25,
            seed,
            [0.5, 0.8, 0.76, 0.9],
            0.9,
            losses=[1.5, 0.6, 0.3, 0.2],
        )
    groups = group_runs(find_runs([tmp_path]))
    v1 = next(r for r in groups["vanilla"] if r.path.name == "v1")
    measures = instability(v1, "acc", higher=True)
    assert measures.spike == pytest.approx(0.7) and measures.dip == pytest.approx(0.3)
    section = stability_section(groups, "acc", True, spike=0.5, dip=0.05)
    assert "| vanilla | 3 | 1 | 1 | 1 | 2 | 0.35 [0, 0.7] | 0.15 [0, 0.3] |" in section
    assert "| h-detach p=0.25 | 3 | 0 | 0 | 0 | 0 | 0 [0, 0] | 0.04 [0.04, 0.04] |" in section
    # 0 of 3 against 2 of 3: Fisher's exact test gives p = 0.4
    assert "h-detach p=0.25: 0 of 3 runs unstable, against 2 of 3 for vanilla" in section
    assert "p = 0.4)" in section
    code = main(["report", str(tmp_path), "--out", str(tmp_path / "r"), "--stability"])
    assert code is None or code == 0
    assert "## Stability" in (tmp_path / "r" / "report.md").read_text()
    with pytest.raises(SystemExit) as e:
        main(["report", str(tmp_path), "--stability", "--dip", "0"])
    assert e.value.code == 2 and "--dip must be finite and > 0" in capsys.readouterr().err


def test_until_epoch_reads_every_run_as_it_stood_then(tmp_path, capsys):
    from hdetach.experiments.report.runs import read_run, up_to_epoch

    def run(name, accs, best_step, status="finished"):
        _fake_run(tmp_path / name, 0.0, int(name[-1]), accs, 0.5, status=status)
        config = json.loads((tmp_path / name / "config.json").read_text())
        config.update(steps_per_epoch=1, epochs=len(accs))  # _fake_run: a step an epoch
        (tmp_path / name / "config.json").write_text(json.dumps(config))
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        (tmp_path / name / "summary.json").write_text(
            json.dumps({**summary, "best_step": best_step})
        )
        return read_run(tmp_path / name)

    early = run("s0", [0.2, 0.6, 0.4, 0.3], best_step=2)  # its best by epoch 2
    late = run("s1", [0.2, 0.3, 0.4, 0.9], best_step=4)  # its best after the window
    burst = run("s2", [0.2, 0.3, 0.4], best_step=3, status="diverged")  # diverged at step 3
    short = run("s3", [0.2, 0.5], best_step=2)  # finished within the window
    at_two = {r.path.name: up_to_epoch(r, 2) for r in (early, late, burst, short)}
    assert [rec["epoch"] for rec in at_two["s0"].records] == [1.0, 2.0]
    assert at_two["s0"].records[-1]["best"]["value"] == 0.6
    assert at_two["s0"].summary["test_at_best"] == {"acc": 0.5}  # the best model's, kept
    assert "test_at_best" not in at_two["s1"].summary  # the test belongs to epoch 4's model
    assert not at_two["s2"].diverged  # it diverged after the window
    assert up_to_epoch(burst, 3).diverged
    assert at_two["s3"] is short  # ended by then: read whole
    # read to epoch 2, the longer runs are runs of 2 epochs, one configuration with s3
    assert {r.config["epochs"] for r in at_two.values()} == {2}
    assert up_to_epoch(early, 0.5).records == []  # not evaluated yet then

    out = tmp_path / "r"
    main(
        [
            "report",
            *(str(tmp_path / f"s{k}") for k in range(4)),
            "--out",
            str(out),
            "--until-epoch",
            "2",
            "--stability",
        ]
    )
    text = (out / "report.md").read_text()
    # 4 seeds at epoch 2: best 0.6, 0.3, 0.3, 0.5; test at best only where it is known
    assert "| copy | 4 | 2 | 0.4250" in text
    assert "| 0.5000 ± 0.0000 [0.5000, 0.5000] |" in text
    assert "| copy | 4 | 0 | 0 |" in text  # stability: none diverged by epoch 2
    with pytest.raises(SystemExit) as e:
        main(["report", str(tmp_path / "s0"), "--out", str(out), "--until-epoch", "0.5"])
    assert e.value.code == 2 and "no run had been evaluated by then" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["report", str(tmp_path), "--until-epoch", "0"])
    assert e.value.code == 2 and "--until-epoch must be finite and > 0" in capsys.readouterr().err

import json

import pytest

from hdetach.report import find_runs, group_runs, markdown_table, report


def _fake_run(path, p, seed, accs, test_acc, transfer=None):
    path.mkdir(parents=True)
    cfg = {"task": "copy", "T": 10, "p_detach": p, "seed": seed, "run_dir": str(path)}
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
                    "val": {"acc": a, "loss": 1},
                    "best": {"value": best, "step": i + 1},
                }
            )
        )
    (path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (path / "summary.json").write_text(json.dumps({"test_at_best": {"acc": test_acc}}))
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
    # vanilla: best 0.3 and 0.5 -> mean 0.4, std 0.1; final 0.2 and 0.4; test 0.25 and 0.45
    assert "| vanilla | 2 | 3 | 0.4000 ± 0.1000 [0.3000, 0.5000] | 0.3000 ± 0.1000 " in table
    assert "| 0.3500 ± 0.1000 [0.2500, 0.4500] |" in table
    assert "| h-detach p=0.5 | 1 | 3 | 0.9000 | 0.9000 | 0.8500 |" in table
    assert "| h-detach p=0.5 | 0.9000 | 0.5000 |" in table  # transfer row
    written = report([tmp_path], tmp_path / "out")
    assert set(written) == {"curves", "transfer", "table"}


def test_missing_or_empty_run_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        find_runs([tmp_path / "nope"])
    with pytest.raises(FileNotFoundError, match="no run directories"):
        find_runs([tmp_path])

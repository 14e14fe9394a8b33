"""hdetach demo: two runs side by side, rerunnable, resumable."""

import json

import pytest
import torch
from helpers import interrupt_at, run_cli


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _table(stdout: str) -> list[str]:
    return [x for x in stdout.splitlines() if x.startswith("| ")]


def test_demo_resumes_reuses_and_refuses_other_settings(tmp_path, capsys, monkeypatch):
    from hdetach.demo import demo_configs
    from hdetach.train import train

    out = tmp_path / "demo"
    # A demo interrupted by Ctrl-C: the vanilla run stopped at step 30 of 250.
    interrupt_at(monkeypatch, 30)
    vanilla = demo_configs(out, T=2, epochs=1, seed=0, p_detach=0.5)["vanilla"]
    assert train(vanilla, progress=False)["status"] == "interrupted"
    monkeypatch.undo()

    argv = ["demo", "--T", "2", "--epochs", "1", "--out", str(out)]
    code, stdout, err = run_cli(argv, capsys)
    assert code == 0, err
    assert f"vanilla: resuming in {out / 'vanilla'}" in stdout and "ETA" in stdout
    summaries = {
        n: json.loads((out / n / "summary.json").read_text()) for n in ("vanilla", "h-detach")
    }
    assert all(s["status"] == "finished" and s["steps"] == 250 for s in summaries.values())
    table = _table(stdout)
    assert [r.split("|")[1].strip() for r in table[1:]] == ["vanilla", "h-detach"]
    assert all(r.count("|") == 6 for r in table)
    assert (out / "curves.png").is_file() and (out / "report.md").is_file()
    cfg = {n: json.loads((out / n / "config.json").read_text()) for n in ("vanilla", "h-detach")}
    assert cfg["vanilla"]["p_detach"] == 0 and cfg["h-detach"]["p_detach"] > 0
    # side by side on the same data, seed and everything else
    same = {k for k in cfg["vanilla"] if k not in ("p_detach", "run_dir")}
    assert all(cfg["vanilla"][k] == cfg["h-detach"][k] for k in same)

    # the same command again: both runs reused, the same table
    code, again, err = run_cli(argv, capsys)
    assert code == 0, err
    assert again.count("reusing the finished run") == 2 and _table(again) == table

    code, _, err = run_cli(["demo", "--out", str(out)], capsys)
    assert code == 2 and "holds a demo with other settings (T 2" in err
    assert err.count("\n") == 1


def test_demo_table_rows_keep_their_columns_whatever_the_status():
    from hdetach.demo import table_row

    finished = {
        "status": "finished",
        "best_val": 0.5,
        "best_epoch": 3.0,
        "final_val": 0.4,
        "test_at_best": {"acc": 0.45},
    }
    rows = [
        table_row("vanilla", finished, 100),
        table_row("vanilla", {"status": "interrupted", "step": 7}, 100),
        table_row("vanilla", {"status": "diverged", "steps": 9}, 100),
    ]
    assert rows[0] == "| vanilla | 0.500 | 3 | 0.400 | 0.450 |"
    assert "interrupted at step 7 of 100" in rows[1] and "diverged at step 9" in rows[2]
    assert all(r.count("|") == 6 for r in rows)


def test_processes_share_the_cores(monkeypatch):
    from hdetach import demo

    monkeypatch.setattr(demo.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert [demo.cores_per_process(n) for n in (1, 2, 3, 32)] == [16, 8, 5, 1]

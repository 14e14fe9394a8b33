"""The benchmark script runs and reports ratios measured in the same run (no timing asserted)."""

from __future__ import annotations

import pytest

from hdetach.experiments.bench import cli as bench
from hdetach.experiments.bench.table import AuthorsLoop


def test_bench_prints_a_table_with_every_row(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(bench.SHAPES, "tiny", (6, 3, 2, 4))
    output = tmp_path / "table.md"
    bench.main(
        [
            "--shapes",
            "tiny",
            "--repeats",
            "1",
            "--p",
            "0",
            "0.5",
            "--backends",
            "fused",
            "reference",
            "--output",
            str(output),
        ]
    )
    text = output.read_text()
    assert "Machine:" in text
    for impl in (
        "torch.nn.LSTM",
        "authors' loop",
        "hdetach fused, compiled",
        "hdetach fused, python",
        "hdetach reference",
        "matmul floor",
        "FLOP floor",
    ):
        assert f"| {impl} |" in text
    # torch, the loop at 2 p, fused on 2 kernels and reference at 2 p, 2 floors at p 0 and 0.5
    assert text.count("| tiny (6, 3, 2, 4) |") == 1 + 2 + 3 * 2 + 1 + 2
    floor_ratios = [line.rsplit("|", 2)[1].strip() for line in text.splitlines() if "tiny" in line]
    assert all(r.endswith("x") and float(r[:-1]) > 0 for r in floor_ratios)
    assert text in capsys.readouterr().out


def test_population_bench_compares_the_three_ways_at_each_k(monkeypatch, capsys):
    monkeypatch.setitem(bench.SHAPES, "tiny", (5, 3, 2, 4))
    bench.main(["--population", "1", "3", "--shapes", "tiny", "--repeats", "1", "--p", "0.5"])
    text = capsys.readouterr().out
    assert "p_detach 0.5" in text
    rows = [line for line in text.splitlines() if line.startswith("| tiny (5, 3, 2, 4) |")]
    assert len(rows) == 2 * 4
    for k in (1, 3):
        impls = [r.split("|")[3].strip() for r in rows if r.split("|")[2].strip() == str(k)]
        assert impls[:3] == ["population, batched", "population, auto", "one after another"]
        assert impls[3].startswith("parallel processes")
    speedups = [r.split("|")[6].strip() for r in rows if "| population," in r]
    assert len(speedups) == 4 and all(s.endswith("x") and float(s[:-1]) > 0 for s in speedups)


@pytest.mark.parametrize(
    "argv",
    [
        ["--p", "2"],
        ["--backends", "magic"],
        ["--repeats", "0"],
        ["--population", "0"],
        ["--population", "2", "--dtype", "float64"],
    ],
)
def test_bench_bad_options_exit_2(argv):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(argv)
    assert exit_info.value.code == 2


def test_bench_help_describes_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    parser = bench.build_parser()
    for action in parser._actions:
        assert action.help, f"{action.option_strings} has no help line"
        assert action.option_strings[0] in text


def test_authors_loop_detaches_only_while_training():
    import torch

    loop = AuthorsLoop(2, 3, p_detach=1.0)
    x = torch.randn(4, 2, 2)
    detached = torch.autograd.grad(loop(x)[0][-1].sum(), loop.cell.weight_hh)[0]
    loop.eval()
    plain = torch.autograd.grad(loop(x)[0][-1].sum(), loop.cell.weight_hh)[0]
    assert not torch.allclose(detached, plain)

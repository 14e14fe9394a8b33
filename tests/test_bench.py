"""The benchmark script runs and reports ratios measured in the same run (no timing asserted)."""

from __future__ import annotations

import pytest

from hdetach.experiments.bench import cli as bench
from hdetach.experiments.bench.table import (
    HDETACH_CELL_LOOP,
    TORCH_CELL_LOOP,
    AuthorsLoop,
    cell_loop,
    format_cell_table,
    same_weight_cells,
)


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
            "--cells",
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
    assert "LSTMCell loop" not in text  # --cells alone: no cell table


def _cell_rows(text: str, shape: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.split("|")[1:-1]]
        for line in text.splitlines()
        if line.startswith(f"| {shape} ")
    ]


def test_bench_cell_loops_pair_both_cells_at_each_p(monkeypatch, capsys):
    monkeypatch.setitem(bench.SHAPES, "tiny", (5, 3, 2, 4))
    bench.main(["--shapes", "--cells", "tiny", "--repeats", "1", "--p", "0", "0.5"])
    text = capsys.readouterr().out
    assert "| shape (T, B, I, H) |" not in text  # --shapes alone: no hdetach.LSTM table
    assert "| cell shape (T, B, I, H) |" in text
    rows = _cell_rows(text, "tiny (5, 3, 2, 4)")
    assert [(r[1], r[2]) for r in rows] == [
        (TORCH_CELL_LOOP, "0"),
        (HDETACH_CELL_LOOP, "0"),
        (TORCH_CELL_LOOP, "0.5"),
        (HDETACH_CELL_LOOP, "0.5"),
    ]
    for row in rows:
        assert all(float(ms) > 0 for ms in row[3:6])
        assert row[6].endswith("x") and float(row[6][:-1]) > 0
    assert [r[6] for r in rows if r[1] == TORCH_CELL_LOOP] == ["1.00x", "1.00x"]


def test_the_default_bench_times_the_cell_loops_at_the_cell_shape():
    args = bench.build_parser().parse_args([])
    assert bench.SHAPES["cell"] == (200, 32, 32, 64)
    assert "cell" not in args.shapes and args.cells is None  # main: DEFAULT_CELLS
    assert bench.DEFAULT_CELLS == ["cell"]


def test_cell_table_ratios_are_against_the_torch_loop_of_the_same_p(monkeypatch):
    monkeypatch.setitem(bench.SHAPES, "tiny", (5, 3, 2, 4))

    def row(impl, p, ms):
        return {
            "shape": "tiny",
            "impl": impl,
            "p": p,
            "fwd_ms": 1,
            "train_fwd_ms": 1,
            "fwd_bwd_ms": ms,
        }

    rows = [
        row(TORCH_CELL_LOOP, 0.0, 10.0),
        row(HDETACH_CELL_LOOP, 0.0, 12.0),
        row(TORCH_CELL_LOOP, 0.25, 20.0),
        row(HDETACH_CELL_LOOP, 0.25, 10.0),
    ]
    ratios = [r[6] for r in _cell_rows(format_cell_table(rows), "tiny (5, 3, 2, 4)")]
    assert ratios == ["1.00x", "1.20x", "1.00x", "0.50x"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_cell_loops_agree_at_p_0_on_the_same_weights(dtype):
    """At p = 0 the hdetach row computes what the torch row does: outputs and every
    gradient equal, so the row compares like with like."""
    import torch

    dtype = getattr(torch, dtype)
    torch_cell, (ours, detaching) = same_weight_cells(3, 4, [0.0, 1.0], torch.device("cpu"), dtype)
    for name, weight in torch_cell.named_parameters():
        assert torch.equal(weight, ours.get_parameter(name))
        assert torch.equal(weight, detaching.get_parameter(name))
    x = torch.randn(6, 2, 3, dtype=dtype)
    grad = torch.randn(6, 2, 4, dtype=dtype)
    results = []
    for cell in (torch_cell, ours, detaching):
        x_ = x.clone().requires_grad_()
        out = cell_loop(cell, x_)
        grads = torch.autograd.grad(out, [x_, *cell.parameters()], grad)
        results.append((out, grads))
    (out, grads), (our_out, our_grads), (detached_out, detached_grads) = results
    assert torch.equal(out, our_out)
    assert all(torch.equal(a, b) for a, b in zip(grads, our_grads))
    # the loop hands the cell its state at every step: at p = 1 every step detaches it
    assert torch.equal(out, detached_out)
    assert not torch.allclose(grads[-3], detached_grads[-3])  # weight_hh


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
        ["--population", "2", "--cells", "cell"],
        ["--population", "2", "--shapes"],
        ["--shapes", "--cells"],
        ["--cells", "nonesuch"],
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

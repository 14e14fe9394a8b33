"""What the report's figures say: ticks at the tested T, titles, the chance line, and
what every band is. The figures are read back from matplotlib as they are saved."""

from __future__ import annotations

import json

import matplotlib.figure
import pytest
from helpers import axes_drawn_by

from hdetach.experiments.gradients.plots import plot_gradient_balance
from hdetach.experiments.report.report import report
from hdetach.experiments.tasks.definitions import Copying

CHANCE = Copying.chance

TESTED_T = [10, 25, 50]


@pytest.fixture
def saved(monkeypatch) -> dict:
    """File name -> the Figure written there."""
    figures, original = {}, matplotlib.figure.Figure.savefig

    def keep(self, fname, *args, **kwargs):
        figures[fname.name] = self
        return original(self, fname, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    return figures


def copy_run(folder, p: float, seed: int, acc: list[float], transfer: list[float]) -> None:
    """A finished copying run trained at T=5, evaluated at TESTED_T."""
    folder.mkdir(parents=True)
    config = {"task": "copy", "T": 5, "p_detach": p, "seed": seed, "run_dir": str(folder)}
    (folder / "config.json").write_text(json.dumps(config))
    records = [
        {"step": k, "epoch": float(k), "metric": "acc", "val": {"acc": a}, "best": {"value": a}}
        for k, a in enumerate(acc, 1)
    ]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = {"status": "finished", "metric": "acc", "test_at_best": {"acc": acc[-1]}}
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "transfer.json").write_text(json.dumps({"T": TESTED_T, "acc": transfer}))


def chance_lines(ax) -> list:
    return [line for line in ax.get_lines() if line.get_label().startswith("chance")]


def test_transfer_figure_ticks_title_chance_and_band(tmp_path, saved):
    for p in (0.0, 0.5):
        for seed in (0, 1):
            copy_run(tmp_path / f"p{p}-s{seed}", p, seed, [0.2, 0.4 + p / 2], [0.5, 0.3, 0.2])
    report([tmp_path], tmp_path / "out")
    (ax,) = saved["transfer.png"].axes
    assert list(ax.get_xticks()) == [5, *TESTED_T]  # the training length, then the tested
    assert [t.get_text() for t in ax.get_xticklabels()] == ["5", "10", "25", "50"]
    assert len(ax.xaxis.get_minorticklocs()) == 0  # no 2x10^1 ... labels
    title = ax.get_title()
    assert "trained at T=5" in title and "band: their min to max" in title
    (chance,) = chance_lines(ax)
    assert list(chance.get_ydata()) == [CHANCE, CHANCE] and CHANCE == 1 / 8
    assert {"vanilla (n=2)", "h-detach p=0.5 (n=2)"} <= {t.get_text() for t in ax.legend_.texts}
    # Each line starts at T=5 from its runs' test accuracy at the best validation.
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["vanilla (n=2)"].get_xdata()) == [5, *TESTED_T]
    assert list(lines["vanilla (n=2)"].get_ydata()) == pytest.approx([0.4, 0.5, 0.3, 0.2])
    assert list(lines["h-detach p=0.5 (n=2)"].get_ydata())[0] == pytest.approx(0.65)
    assert list(lines["training length T=5"].get_xdata()) == [5, 5]


def test_a_transfer_line_starts_at_the_training_length_only_below_the_tested_ones(tmp_path, saved):
    copy_run(tmp_path / "a", 0.0, 0, [0.2, 0.4], [0.5, 0.3, 0.2])
    config = tmp_path / "a" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "T": TESTED_T[0]}))
    report([tmp_path], tmp_path / "out")
    (ax,) = saved["transfer.png"].axes
    assert list(ax.get_xticks()) == TESTED_T  # T=10 is the transfer's own first point
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["copy (n=1)"].get_ydata()) == pytest.approx(
        [0.5, 0.3, 0.2]
    )  # one run: named by task
    assert list(lines["training length T=10"].get_xdata()) == [10, 10]


def test_curves_say_what_the_band_is_only_where_one_is_drawn(tmp_path, saved):
    copy_run(tmp_path / "a", 0.0, 0, [0.2, 0.4], [0.5, 0.3, 0.2])
    report([tmp_path], tmp_path / "one")
    (ax,) = saved["curves.png"].axes
    assert "band" not in ax.get_title() and len(chance_lines(ax)) == 1
    copy_run(tmp_path / "b", 0.0, 1, [0.3, 0.5], [0.5, 0.3, 0.2])
    report([tmp_path], tmp_path / "two")
    (ax,) = saved["curves.png"].axes
    assert "band: their min to max" in ax.get_title()


def test_gradient_balance_says_what_its_band_is(tmp_path, saved):
    dirs = []
    for seed, ratios in enumerate(([2.0, 1.0], [4.0, 3.0])):
        d = tmp_path / f"s{seed}"
        d.mkdir()
        tracked = [{"step": 10 * k, "lstm": {"ratio": r}} for k, r in enumerate(ratios)]
        (d / "metrics.jsonl").write_text(json.dumps({"step": 10, "gradients": tracked}) + "\n")
        dirs.append(d)
    plot_gradient_balance({"h-detach": dirs}, tmp_path / "gradients.png")
    (ax,) = saved["gradients.png"].axes
    assert "geometric mean over the n seeds; band: their min to max" in ax.get_title()


def test_mnist_curves_draw_the_ten_class_chance_line(tmp_path, monkeypatch):
    from hdetach.experiments.report import report as report_module
    from hdetach.experiments.report.runs import find_runs, group_runs

    drawn = axes_drawn_by(report_module, monkeypatch)
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"task": "pmnist", "p_detach": 0, "seed": 0}))
    line = {"step": 1, "epoch": 1.0, "metric": "acc", "val": {"acc": 0.3}, "best": {"value": 0.3}}
    (run / "metrics.jsonl").write_text(json.dumps(line) + "\n")
    report_module.plot_curves(group_runs(find_runs([tmp_path])), tmp_path / "c.png")
    (chance,) = [ln for ln in drawn[0].get_lines() if ln.get_label().startswith("chance")]
    assert list(chance.get_ydata()) == [0.1, 0.1]


def test_curve_titles_name_the_task_in_words(tmp_path):
    from hdetach.experiments.report.report import curves_title
    from hdetach.experiments.report.runs import RunRecord

    def run(task, T=None, clip="norm"):
        return RunRecord(tmp_path, {"task": task, "T": T, "clip": clip}, [], None, None)

    assert curves_title([run("mnist", 784)]) == "pixel MNIST"
    assert curves_title([run("pmnist", 784)]) == "permuted MNIST"
    assert curves_title([run("copy", 100), run("copy", 300)]) == "copying task, T=100, 300"
    no_clip = [run("mnist", 784, "none"), run("mnist", 784, "none")]
    assert curves_title(no_clip) == "pixel MNIST; no gradient clipping"
    assert curves_title([*no_clip, run("mnist", 784)]) == "pixel MNIST"  # one clipped


def test_the_epoch_axis_says_how_many_steps_an_epoch_is_where_runs_agree(tmp_path):
    from hdetach.experiments.report.report import epoch_label
    from hdetach.experiments.report.runs import RunRecord

    def run(steps_per_epoch):
        return RunRecord(
            tmp_path, {"task": "copy", "steps_per_epoch": steps_per_epoch}, [], None, None
        )

    assert epoch_label([run(1000), run(1000)]) == "epoch (1,000 training steps)"
    assert epoch_label([run(1000), run(500)]) == "epoch"
    assert epoch_label([run(None)]) == "epoch"  # a hand-written config without it


def test_the_stability_figure_draws_every_run_and_marks_a_divergence(tmp_path, saved):
    def run(name, p, seed, accs, losses, status="finished"):
        folder = tmp_path / name
        folder.mkdir()
        config = {"task": "mnist", "p_detach": p, "seed": seed, "clip": "none"}
        (folder / "config.json").write_text(json.dumps({**config, "run_dir": str(folder)}))
        records = [
            {
                "step": k,
                "epoch": float(k),
                "metric": "acc",
                "val": {"acc": a},
                "best": {"value": max(accs[:k])},
                "train": {"loss": loss},
            }
            for k, (a, loss) in enumerate(zip(accs, losses), 1)
        ]
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        summary = {"status": status, "metric": "acc", "steps": len(accs)}
        if status == "finished":
            summary["test_at_best"] = {"acc": max(accs)}
        (folder / "summary.json").write_text(json.dumps(summary))

    run("v0", 0.0, 0, [0.1, 0.4, 0.1], [2.3, 1.7, 2.3])  # a collapse the mean would blur
    run("v1", 0.0, 1, [0.1, 0.2], [2.3, 2.1], status="diverged")
    run("h0", 0.25, 0, [0.1, 0.3, 0.5], [2.3, 1.9, 1.4])
    run("h1", 0.25, 1, [0.1, 0.4, 0.6], [2.3, 1.8, 1.2])
    written = report([tmp_path], tmp_path / "out", stability=(0.5, 0.05))
    assert written["runs"].name == "runs.png"
    fig = saved["runs.png"]
    titles = [ax.get_title() for ax in fig.axes[:2]]  # a column per configuration
    assert sorted(titles) == ["h-detach p=0.25", "vanilla"]
    column = titles.index("vanilla")
    vanilla_acc, vanilla_loss = fig.axes[column], fig.axes[2 + column]
    hdetach_acc, hdetach_loss = fig.axes[1 - column], fig.axes[3 - column]

    def drawn(ax):  # label -> y values of the lines (the chance line aside)
        return {
            line.get_label(): list(line.get_ydata())
            for line in ax.get_lines()
            if not line.get_label().startswith(("chance", "_"))
        }

    assert drawn(vanilla_acc) == {"seed 0": [0.1, 0.4, 0.1], "seed 1 (diverged)": [0.1, 0.2]}
    assert drawn(hdetach_acc) == {"seed 0": [0.1, 0.3, 0.5], "seed 1": [0.1, 0.4, 0.6]}
    crosses = [line for line in vanilla_acc.get_lines() if line.get_marker() == "x"]
    assert [list(c.get_ydata()) for c in crosses] == [[0.2]]  # where the diverged run stopped
    assert not [line for line in hdetach_acc.get_lines() if line.get_marker() == "x"]
    losses = [list(line.get_ydata()) for line in vanilla_loss.get_lines()]
    assert losses == [[2.3, 1.7, 2.3], [2.3, 2.1]]
    assert len(hdetach_loss.get_lines()) == 2

    # a seed keeps its colour in every column; the chance line is the task's
    def colours(ax):
        return {line.get_label(): line.get_color() for line in ax.get_lines()}

    assert colours(vanilla_acc)["seed 0"] == colours(hdetach_acc)["seed 0"]
    assert colours(vanilla_acc)["seed 0"] != colours(hdetach_acc)["seed 1"]
    assert [line.get_ydata()[0] for line in chance_lines(vanilla_acc)] == [0.1]
    assert "no gradient clipping: every run" in fig._suptitle.get_text()
    report([tmp_path], tmp_path / "plain")  # without --stability: no such figure
    assert not (tmp_path / "plain" / "runs.png").exists()

"""``hdetach analyze`` carried out: the weight-scale study, or the gradient paths of each
trained run's best model."""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import fields
from pathlib import Path

import torch
from tqdm import tqdm

from hdetach.experiments.config import ConfigError
from hdetach.experiments.gradients.plots import plot_study
from hdetach.experiments.gradients.runs import analyze_run
from hdetach.experiments.gradients.weight_scale import StudySettings, weight_scale_study
from hdetach.experiments.run.files import write_json
from hdetach.experiments.run.folder import RunFolder


def _check(a: argparse.Namespace) -> None:
    for name in ("T", "hidden_size", "seeds", "batch_size", "first", "end_steps", "threads"):
        value = getattr(a, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1; got {value}")
    if any(s <= 0 for s in a.scales):
        raise ConfigError(f"--scales must all be > 0; got {a.scales}")
    for run_dir in a.run_dirs:
        if not RunFolder(run_dir).holds_run():
            raise ConfigError(f"RUN_DIR {run_dir}: no config.json there")


def run(a: argparse.Namespace) -> None:
    """Carry out ``hdetach analyze`` (raises ConfigError on bad options, before any work)."""

    _check(a)
    torch.set_num_threads(a.threads)
    if a.run_dirs:
        _analyze_runs(a)
    else:
        _study(a)


def _analyze_runs(a: argparse.Namespace) -> None:

    for run_dir in map(Path, a.run_dirs):
        out = Path(a.out) / run_dir.name if a.out else run_dir / "analysis"
        r = analyze_run(run_dir, out, a.batch_size, a.first, a.end_steps, a.dtype)
        lstm, w_hh = r["groups"]["lstm"], r["groups"]["W_hh"]
        shares = (
            f"; share of the end loss's input gradient on the first {a.first} steps: "
            + ", ".join(f"{p} {v:.3g}" for p, v in r["share_first"].items())
            if r["profiles"] is not None
            else ""  # a model without an hdetach.LSTM (a cell loop): no input profile
        )
        print(
            f"{run_dir} (step {r['checkpoint']['step']}, p_detach {r['p_detach']:g}): "
            f"||h-path||/||cell-path|| {lstm['ratio']:.3g} (W_hh {w_hh['ratio']:.3g}), "
            f"cos(full, cell) {lstm['cos_full_cell']:.3f}{shares} -> {out}"
        )


def _study(a: argparse.Namespace) -> None:

    settings = StudySettings(
        **{f.name: getattr(a, f.name) for f in fields(StudySettings) if f.name != "scales"},
        scales=tuple(a.scales),
    )
    out = Path(a.out or "runs/analysis")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with tqdm(total=settings.seeds * len(settings.scales), disable=a.progress is False) as bar:
        result = weight_scale_study(settings, on_step=lambda: bar.update(1)).to_json()

    result["run"] = {
        "wall_s": time.time() - t0,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }
    write_json(out / "study.json", result)
    written = plot_study(result, out)
    print(_table(result))
    print(
        f"wall time {result['run']['wall_s']:.0f} s; wrote {out / 'study.json'}, "
        + ", ".join(str(p) for p in written.values())
    )


def _table(result: dict) -> str:
    """Markdown: per scale, mean ± std over seeds of the ratio and the first-steps shares."""
    k = result["settings"]["first"]
    rows = [
        f"| s | seeds | ratio lstm | ratio W_hh | share first {k}: full | cell | hidden | "
        f"h/cell at first {k} |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def cell(stats: dict) -> str:
        return "-" if stats["mean"] is None else f"{stats['mean']:.3g} ± {stats['std']:.2g}"

    for scale, s in result["summary"].items():
        rows.append(
            f"| {float(scale):g} | {s['ratio.lstm']['n']} | {cell(s['ratio.lstm'])} | "
            f"{cell(s['ratio.W_hh'])} | {cell(s['share_first.full'])} | "
            f"{cell(s['share_first.cell'])} | {cell(s['share_first.hidden'])} | "
            f"{cell(s['first_ratio'])} |"
        )
    return "\n".join(rows)

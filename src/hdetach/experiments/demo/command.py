"""``hdetach demo`` carried out: the study's sweep, transfer copying of each run's best
model, the report, and the verdicts on the numbers."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

from hdetach.experiments.config import ConfigError
from hdetach.experiments.demo.cli import (
    DEMO,
    DEMO_SEEDS,
    SHORT,
    SHORT_TRANSFER_N,
    TRANSFER_FACTORS,
    TRANSFER_N,
    TRANSFER_SEED,
)
from hdetach.experiments.demo.verdicts import balance_verdict, transfer_verdict, verdict
from hdetach.experiments.gradients.tracking import late_ratio
from hdetach.experiments.report.report import report
from hdetach.experiments.report.runs import find_runs, group_runs, transfer_accuracies
from hdetach.experiments.report.stats import Spread, group_stats
from hdetach.experiments.report.study import one_run_per_seed
from hdetach.experiments.run.folder import RunFolder
from hdetach.experiments.sweep.engines import layout
from hdetach.experiments.sweep.grid import Grid, prepare
from hdetach.experiments.sweep.runner import run_sweep
from hdetach.experiments.tasks.definitions import Copying
from hdetach.experiments.transfer.evaluate import transfer


def demo_grid(
    T: int | None,
    epochs: int | None,
    seeds: int,
    p_detach: float,
    short: bool,
    first_seed: int = 0,
    **options: float | int | None,
) -> Grid:
    """The demo's sweep: the two models (p = 0 and ``p_detach``) times ``seeds`` seeds from
    ``first_seed`` on; ``options`` (hidden_size, lr, steps_per_epoch) replace the demo's
    setting where not None, so that other settings can be studied with the same command."""
    base = {k: v for k, v in (SHORT if short else DEMO).items() if k != "task"}
    given = {"T": T, "epochs": epochs, **options}
    base.update({k: v for k, v in given.items() if v is not None})
    seed_list = list(range(first_seed, first_seed + seeds))
    return Grid("copy", base, {"p_detach": [0.0, p_detach]}, seed_list)


def has_transfer(run_dir: Path, Ts: list[int], n: int, seed: int) -> bool:
    """Whether the run's transfer.json already holds its best model's accuracy at ``Ts``
    on these test sequences (so rerunning the demo does not evaluate it again)."""
    folder = RunFolder(run_dir)
    done, summary = folder.read_transfer(), folder.read_summary()
    if done is None or summary is None:
        return False
    asked = {"T": list(Ts), "n": n, "seed": seed, "step": summary["best_step"]}
    return all(done.get(k) == v for k, v in asked.items())


def transfer_runs(run_dirs: list[Path], Ts: list[int], n: int) -> None:
    """Transfer copying for every run that has a best model and lacks these results: its
    accuracy at each T in ``Ts`` on ``n`` fresh sequences, written to its transfer.json."""

    todo = [d for d in run_dirs if RunFolder(d).best_checkpoint.is_file()]
    todo = [d for d in todo if not has_transfer(d, Ts, n, TRANSFER_SEED)]
    shown = ", ".join(map(str, Ts))
    print(f"\ntransfer copying at T = {shown} ({n} fresh sequences per T): {len(todo)} to evaluate")
    for d in todo:
        accs = transfer(d, Ts, n, TRANSFER_SEED)["acc"]
        print(f"{d.name}: accuracy " + " / ".join(f"{a:.4f}" for a in accs), file=sys.stderr)


PROGRESS_SECONDS = 10.0


class SweepProgress:
    """A line on stderr every PROGRESS_SECONDS while the sweep trains: the steps its runs have
    recorded (their evaluations, every epoch), of all, and an estimate of the time left.
    The runs train in worker processes; their metrics.jsonl files are what can be read."""

    def __init__(self, run_dirs: list[Path], steps_per_run: int) -> None:
        self.run_dirs, self.total = run_dirs, steps_per_run * len(run_dirs)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._report, daemon=True)

    def __enter__(self) -> SweepProgress:
        self.start_steps = self._steps()
        self.started = time.time()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def _steps(self) -> int:
        return sum(RunFolder(d).steps_recorded() for d in self.run_dirs)

    def _report(self) -> None:
        while not self.stop.wait(PROGRESS_SECONDS):
            steps, elapsed = self._steps(), time.time() - self.started
            done = steps - self.start_steps
            left = (self.total - steps) * elapsed / done if done > 0 else None
            eta = "?" if left is None else f"{left / 60:.1f} min"
            print(
                f"  {steps:,} of {self.total:,} steps ({100 * steps / self.total:.0f}%) after "
                f"{elapsed / 60:.1f} min, about {eta} left",
                file=sys.stderr,
                flush=True,
            )


def run(a: argparse.Namespace) -> None:
    """Run (or continue) the demo's study and print its result."""
    # Each setting its own folder: a sweep folder holds one setting, so --short and the full
    # demo sharing one would refuse whichever ran second.
    out = Path(a.out or ("runs/demo-short" if a.short else "runs/demo"))
    seeds = a.seeds if a.seeds is not None else (2 if a.short else DEMO_SEEDS)
    if seeds < 1 or (a.jobs is not None and a.jobs < 1):
        raise ConfigError("--seeds and --jobs must be >= 1")
    if a.first_seed < 0:
        raise ConfigError(f"--first-seed must be >= 0; got {a.first_seed}")
    options = {"hidden_size": a.hidden_size, "lr": a.lr, "steps_per_epoch": a.steps_per_epoch}
    grid = demo_grid(a.T, a.epochs, seeds, a.p_detach, a.short, a.first_seed, **options)
    runs = prepare(out, grid)
    jobs, threads = layout(len(runs), a.jobs, None)
    total = next(iter(runs.values())).total_steps
    print(
        f"{len(runs)} runs of {total} steps, {jobs} at once; progress every "
        f"{PROGRESS_SECONDS:.0f} s, a line per finished run",
        flush=True,
    )
    t0 = time.time()
    with SweepProgress([Path(cfg.run_dir) for cfg in runs.values()], total):
        result = run_sweep(runs, jobs=jobs, threads=threads)
    if result.interrupted or result.failed:
        print("not finished: run the same command again to continue", file=sys.stderr)
        sys.exit(130 if result.interrupted else 1)
    dirs = [Path(cfg.run_dir) for cfg in runs.values()]
    base = grid.base
    Ts = [k * base["T"] for k in TRANSFER_FACTORS]
    transfer_runs(dirs, Ts, SHORT_TRANSFER_N if a.short else TRANSFER_N)
    written = report(dirs, out)
    groups = one_run_per_seed(group_runs(find_runs(dirs)))
    label = f"h-detach p={a.p_detach:g}"
    print(
        f"\ncopying task, trained at T={base['T']}, {base['epochs']} epochs x "
        f"{base['steps_per_epoch']} minibatches, hidden {base['hidden_size']}, lr "
        f"{base['lr']:g}, seeds {grid.seeds[0]}-{grid.seeds[-1]}, "
        f"{(time.time() - t0) / 60:.1f} min"
    )
    _print_own_T(groups, label, base["T"])
    print_transfer(groups, [label], Ts)
    _print_balance(groups, label)
    _print_headline(groups, label, Ts)

    shown = ("curves", "transfer", "gradients")
    plots = "  ".join(f"{k}: {written[k]}" for k in shown if k in written)
    print(f"{plots}  report: {written['table']}  (chance is {Copying.chance:.3g})")


def _print_own_T(groups: dict[str, list], label: str, T: int) -> None:
    """The best validation accuracy at the training gap, per model, and its comparison."""

    stats = {name: group_stats(groups[name], None, True) for name in ("vanilla", label)}
    print(f"| model | seeds | diverged | best val acc at T={T}, mean ± std | median [min, max] |")
    print("|---|---|---|---|---|")
    for name, g in stats.items():
        s = Spread.of(g.best)
        cells = "- | -" if s is None else f"{s.mean:.3f} ± {s.std:.3f} | {s.median:.3f} "
        cells += "" if s is None else f"[{s.min:.3f}, {s.max:.3f}]"
        print(f"| {name} | {g.seeds} | {g.diverged} | {cells} |")
    print(verdict(stats["vanilla"].best, stats[label].best, label, f"best val acc at T={T}"))


def print_transfer(groups: dict[str, list], labels: list[str], Ts: list[int]) -> None:
    """Transfer accuracy per model and T (mean ± std over seeds) of the runs' transfer.json
    files; then each h-detach group of ``labels`` against "vanilla": the comparison at each
    T and the headline over all of them. ``groups``: label -> runs, one per seed."""

    accs = {name: transfer_accuracies(groups[name], Ts) for name in ("vanilla", *labels)}
    print("\ntransfer: accuracy of each run's best model at longer T, mean ± std over seeds")
    print("| model | " + " | ".join(f"T={T}" for T in Ts) + " |\n|---|" + "---|" * len(Ts))
    for name, per_T in accs.items():
        cells = [Spread.of(values) for values in per_T]
        shown = ["-" if s is None else f"{s.mean:.3f} ± {s.std:.3f}" for s in cells]
        print(f"| {name} | " + " | ".join(shown) + " |")
    for label in labels:
        per_T = {T: (accs["vanilla"][i], accs[label][i]) for i, T in enumerate(Ts)}
        for T, (van, hd) in per_T.items():
            print(f"T={T}: " + verdict(van, hd, label, f"accuracy at T={T}"))
        print(transfer_verdict(per_T, label))


def mean_transfer(runs: list, Ts: list[int]) -> list[float]:
    """Per run evaluated at exactly ``Ts``, its transfer accuracy averaged over them."""
    return [sum(per_run) / len(Ts) for per_run in zip(*transfer_accuracies(runs, Ts))]


def _print_headline(groups: dict[str, list], label: str, Ts: list[int]) -> None:
    """The demo's one verdict: each seed's transfer accuracy averaged over ``Ts``, compared
    once. The comparisons above, one per T, split a run's verdict (T = 20 better, T = 100
    within noise) differently from rerun to rerun; the design study (results/demo-design)
    counts how often this one repeats."""

    Ts_shown = ", ".join(map(str, Ts))
    van, hd = (mean_transfer(groups[name], Ts) for name in ("vanilla", label))
    print(f"\nHeadline, transfer accuracy averaged over T = {Ts_shown}, one value per seed:")
    print(verdict(van, hd, label, f"accuracy over T = {Ts_shown}"))


def _print_balance(groups: dict[str, list], label: str) -> None:
    """The late gradient balance of each model (see ``late_ratio``), and its comparison."""

    ratios = {}
    for name in ("vanilla", label):
        found = [late_ratio(run.path) for run in groups[name]]
        ratios[name] = [r for r in found if r is not None]
        shown = ", ".join(f"{r:.3g}" for r in ratios[name]) or "-"
        print(f"{name}: ||h-path|| / ||cell-path||, median over the 2nd half, per seed: {shown}")
    print(balance_verdict(ratios["vanilla"], ratios[label], label))

"""Collect the evidence runs into one table: results/captioning/results.{json,md}.

python results/captioning/collect.py OUT_DIR   (the folder given to run_evidence.sh)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).parent


def run_row(run: Path) -> dict | None:
    summary_file, metrics_file = run / "summary.json", run / "eval" / "test-beam2-metrics.json"
    if not (summary_file.is_file() and metrics_file.is_file()):
        return None
    cfg = json.loads((run / "config.json").read_text())
    summary = json.loads(summary_file.read_text())
    test = json.loads(metrics_file.read_text())["metrics"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    seqs_per_epoch = cfg["n_train"] * cfg["task_options"]["captions_per_image"]
    speeds = [r["time"]["seq_per_s"] for r in records]
    return {
        "run": run.name,
        "model": cfg["task_options"]["model"],
        "features": "standardized" if cfg["task_options"].get("standardize") else "raw",
        "p_detach": cfg["p_detach"],
        "seed": cfg["seed"],
        "epochs": cfg["epochs"],
        "best_epoch": summary["best_epoch"],
        "val_cider_greedy_best": summary["best_val"],
        "test_cider_greedy": summary["test_at_best"]["cider"],
        "test_beam2": test,
        "train_s_per_epoch_median": sorted(seqs_per_epoch / s for s in speeds)[len(speeds) // 2],
        "wall_s": (summary_file.stat().st_mtime - (run / "config.json").stat().st_mtime),
    }


def main(out: Path) -> None:
    rows = [r for run in (out / "runs").iterdir() if (r := run_row(run))]
    rows.sort(key=lambda r: (r["model"], r["features"], r["p_detach"], r["seed"]))
    blind = json.loads((out / "blind-baseline-test.json").read_text())
    (HERE / "results.json").write_text(json.dumps({"runs": rows, "blind": blind}, indent=2) + "\n")
    lines = [
        "| model | features | p | seed | best val CIDEr (greedy) | test CIDEr (beam 2) | "
        "test BLEU-4 | test METEOR | s/epoch (median) | wall (min) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        t, val = r["test_beam2"], 100 * r["val_cider_greedy_best"]
        lines.append(
            f"| {r['model']} | {r['features']} | {r['p_detach']:g} | {r['seed']} | {val:.1f}"
            f" | {100 * t['CIDEr']:.1f} | {100 * t['BLEU-4']:.1f} | {100 * t['METEOR']:.1f} | "
            f"{r['train_s_per_epoch_median']:.0f} | {r['wall_s'] / 60:.1f} |"
        )
    b = blind["metrics"]
    lines.append(
        f'| image-blind: "{blind["caption"]}" | | | | | {100 * b["CIDEr"]:.1f} | '
        f"{100 * b['BLEU-4']:.1f} | {100 * b['METEOR']:.1f} | | |"
    )
    lines += ["", "| model | features | p | runs | test CIDEr mean (min-max) | test BLEU-4 mean |"]
    lines.append("| --- | --- | --- | --- | --- | --- |")
    groups: dict[tuple, list] = {}
    for r in rows:
        groups.setdefault((r["model"], r["features"], r["p_detach"]), []).append(r["test_beam2"])
    for (model, features, p), tests in groups.items():
        cider = [100 * t["CIDEr"] for t in tests]
        bleu = sum(100 * t["BLEU-4"] for t in tests) / len(tests)
        lines.append(
            f"| {model} | {features} | {p:g} | {len(tests)} | {sum(cider) / len(cider):.1f} "
            f"({min(cider):.1f}-{max(cider):.1f}) | {bleu:.1f} |"
        )
    (HERE / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(Path(sys.argv[1]))

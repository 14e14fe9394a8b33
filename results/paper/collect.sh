#!/usr/bin/env bash
# Copy what the campaign has made so far (each run's config, metrics, summary and
# transfer results; no checkpoints) from OUT into results/paper/<study>/, and write each
# study's report there. Safe to run while the campaign runs: it reads finished lines only.
# With DATA (the MNIST folder), also each study's gradient check (check_gradients.py).
# A study's report covers every run in its folder, those still training included (at the
# epoch they have reached): while run-33.sh trains pixel MNIST's seeds 4 to 7 in mnist/,
# its report is not the 20-epoch result; run this when the chains have finished.
# Usage: results/paper/collect.sh [OUT] [DATA]
set -eu
OUT=${1:-runs/paper}
DATA=${2:-}
HERE=$(cd "$(dirname "$0")" && pwd)
for study in mnist pmnist mnist-no-clip copy-T100 copy-T300 pmnist-200 pmnist-perm-per-seed \
    pmnist-200-perm-per-seed; do
    [ -d "$OUT/$study" ] || continue
    for run in "$OUT/$study"/*/; do
        dest="$HERE/$study/$(basename "$run")"
        mkdir -p "$dest"
        for f in config.json metrics.jsonl summary.json transfer.json; do
            [ -f "$run/$f" ] && cp "$run/$f" "$dest/"
        done
    done
    # a study's record appears when its sweep starts (pmnist-200's folder is made before)
    [ ! -f "$OUT/$study/sweep.json" ] || cp "$OUT/$study/sweep.json" "$HERE/$study/"
done
report() {  # study, then report options
    local study=$1; shift
    # a study whose runs have just started (no evaluation yet) has nothing to report
    ls "$HERE/$study"/*/metrics.jsonl > /dev/null 2>&1 || return 0
    hdetach report "$HERE/$study" --out "$HERE/$study/report" "$@" > /dev/null
}
MNIST_AT="--at-epochs 1,2,5,10,15,20 --reach 0.9,0.95"
report mnist --reference "paper, h-detach=0.985" $MNIST_AT --stability
report pmnist --reference "paper, h-detach=0.923" $MNIST_AT --stability
report pmnist-perm-per-seed --reference "paper, h-detach=0.923" $MNIST_AT --stability
report mnist-no-clip --reference "paper, h-detach=0.985" --at-epochs 1,2,4,6,8,10 \
    --reach 0.9,0.95 --stability
# the paper's stability claim set clipped against unclipped, the same seeds, over the
# epochs both studies have (the clipped runs read as they stood at epoch 10; pixel MNIST's
# runs of the seeds the unclipped study has)
if [ -f "$HERE/mnist-no-clip/sweep.json" ] && ls "$HERE"/mnist/*/summary.json > /dev/null 2>&1; then
    clipped=()
    for run in "$HERE"/mnist-no-clip/p_detach=*/; do
        [ -d "$HERE/mnist/$(basename "$run")" ] && clipped+=("$HERE/mnist/$(basename "$run")")
    done
    hdetach report "${clipped[@]}" "$HERE/mnist-no-clip" --out "$HERE/mnist-no-clip/against-clipped" \
        --baseline clip=norm --until-epoch 10 --at-epochs 2,4,6,8,10 --stability > /dev/null
fi
report copy-T100 --reach 0.9,0.99 --at-epochs 1,5,10,20,30 --stability
report copy-T300 --reach 0.8,0.9,0.99 --at-epochs 1,5,10,20,30 --stability
for study in pmnist-200 pmnist-200-perm-per-seed; do
    report $study --reference "paper, h-detach=0.923" --at-epochs 1,10,20,50,100,150,200 \
        --reach 0.9,0.92
done
# The gradient the campaign computes at the weights its runs have reached, against the
# reference backend in float64 (about a minute in all, one thread).
if [ -n "$DATA" ]; then
    for study in mnist pmnist mnist-no-clip copy-T100 copy-T300 pmnist-perm-per-seed; do
        ls "$OUT/$study"/*/last.pt > /dev/null 2>&1 && [ -d "$HERE/$study" ] || continue
        python "$HERE/check_gradients.py" "$OUT/$study" "$DATA" \
            > "$HERE/$study/gradient-check.md"
    done
fi
# Training time per study: its runs train together on one core (a population), so one
# member's time is the study's; each interval's is its sequences over its throughput
# (metrics.jsonl; validation not included).
python - "$HERE" > "$HERE/compute.md" <<'PY'
import json, sys
from pathlib import Path
here = Path(sys.argv[1])
print("| study | runs | evaluations so far | training wall time (one core), hours |")
print("|---|---|---|---|")
for study in sorted(p for p in here.iterdir() if (p / "sweep.json").is_file()):
    runs = sorted(r for r in study.iterdir() if (r / "metrics.jsonl").is_file())
    if not runs:
        continue
    batch = json.loads((runs[0] / "config.json").read_text())["batch_size"]
    seconds, step = 0.0, 0
    lines = (runs[0] / "metrics.jsonl").read_text().splitlines()
    for record in map(json.loads, lines):
        seconds += (record["step"] - step) * batch / record["time"]["seq_per_s"]
        step = record["step"]
    print(f"| {study.name} | {len(runs)} | {len(lines)} | {seconds / 3600:.1f} |")
PY

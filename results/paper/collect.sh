#!/usr/bin/env bash
# Copy what the campaign has made so far (each run's config, metrics, summary and
# transfer results; no checkpoints) from OUT into results/paper/<study>/, and write each
# study's report there. Safe to run while the campaign runs: it reads finished lines only.
# Usage: results/paper/collect.sh [OUT]
set -eu
OUT=${1:-runs/paper}
HERE=$(cd "$(dirname "$0")" && pwd)
for study in mnist pmnist mnist-no-clip copy-T100 copy-T300 pmnist-200; do
    [ -d "$OUT/$study" ] || continue
    for run in "$OUT/$study"/*/; do
        dest="$HERE/$study/$(basename "$run")"
        mkdir -p "$dest"
        for f in config.json metrics.jsonl summary.json transfer.json; do
            [ -f "$run/$f" ] && cp "$run/$f" "$dest/"
        done
    done
    cp "$OUT/$study/sweep.json" "$HERE/$study/"
done
report() {  # study, then report options
    local study=$1; shift
    [ -d "$HERE/$study" ] || return 0
    hdetach report "$HERE/$study" --out "$HERE/$study/report" "$@" > /dev/null
}
MNIST_AT="--at-epochs 1,2,5,10,15,20 --reach 0.9,0.95"
report mnist --reference "paper, h-detach=0.985" $MNIST_AT --stability
report pmnist --reference "paper, h-detach=0.923" $MNIST_AT --stability
report mnist-no-clip --reference "paper, h-detach=0.985" $MNIST_AT --stability
report copy-T100 --reach 0.9,0.99 --at-epochs 1,5,10,20,30 --stability
report copy-T300 --reach 0.8,0.9,0.99 --at-epochs 1,5,10,20,30 --stability
report pmnist-200 --reference "paper, h-detach=0.923" --at-epochs 1,10,20,50,100,150,200 \
    --reach 0.9,0.92

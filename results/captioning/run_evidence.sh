#!/usr/bin/env bash
# The synthetic-data evidence: vanilla vs h-detach, Show & Tell and Show, Attend & Tell.
# Usage: bash results/captioning/run_evidence.sh OUT_DIR   (from the repository root)
# Reduced sizes and lr 1e-3 (authors: 512 units, lr 1e-4, 30 epochs) so that every run
# fits a few minutes of one CPU thread; all other settings are the authors'.
set -euo pipefail
OUT=${1:?OUT_DIR}
H="python -m hdetach caption"
DATA=$OUT/synth3k
[ -f "$DATA/dataset_coco.json" ] || $H synth --out "$DATA" --images 3000 --val 300 --test 300
$H features "$DATA" --backbone resnet18 --weights none --image-size 224 --fp16 --workers 1 --no-progress
$H baseline "$DATA" --out "$OUT/blind-baseline-test.json"
SIZES="--embed-size 128 --hidden-size 128 --attention-size 128 --lr 1e-3 --threads 1 --no-progress"
run() {  # name model p seed epochs [extra train options]
  local dir=$OUT/runs/$1-p$3-s$4
  if [ ! -f "$dir/summary.json" ]; then
    if [ -f "$dir/last.pt" ]; then $H train --resume "$dir" --no-progress --threads 1
    else $H train "$DATA" --model "$2" --p-detach "$3" --seed "$4" --epochs "$5" --run-dir "$dir" $SIZES "${@:6}"; fi
  fi
  [ -f "$dir/eval/test-beam2-metrics.json" ] || $H eval "$dir" --beam 2 --device cpu
}
# Show & Tell on the raw random-network features barely beats the image-blind caption:
# the pooled vector's channel offsets dwarf the differences between images. Kept as run.
run showtell showtell 0 0 8
run showtell showtell 0.25 0 8
# Show & Tell on standardized features (per-channel train mean/std): it then uses the image.
for seed in 0 1 2; do
  run showtell-std showtell 0 $seed 16 --standardize
  run showtell-std showtell 0.25 $seed 16 --standardize
done
run attend attend 0 0 4
run attend attend 0.4 0 4
for seed in 1 2; do run attend attend 0 $seed 4; run attend attend 0.4 $seed 4; done

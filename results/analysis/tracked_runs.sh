#!/usr/bin/env bash
# Tracked training runs: vanilla vs h-detach (p=0.5) on the copying task (T=50, one-hot,
# the demo's setting, 40 epochs of 250 minibatches), seeds 0-2, the gradient's cell/h path
# split logged every 100 steps. Two runs at a time, one thread each. Re-running this script
# resumes unfinished runs (from last.pt) and skips finished ones (summary.json).
# Usage (from the repository root): nohup results/analysis/tracked_runs.sh > results/analysis/tracked.log 2>&1 &
set -euo pipefail
out=results/analysis/tracked
export OMP_NUM_THREADS=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

one_run() {  # name p seed
  local dir="$out/$1-s$3"
  if [[ -f "$dir/summary.json" ]]; then return 0; fi
  if [[ -f "$dir/last.pt" ]]; then
    python -m hdetach train --resume "$dir" --no-progress --threads 1
  else
    python -m hdetach train copy --T 50 --input-encoding onehot --hidden-size 64 --lr 1e-2 \
      --epochs 40 --steps-per-epoch 250 --n-val 1000 --p-detach "$2" --seed "$3" \
      --track-gradients 100 --run-dir "$dir" --no-progress --threads 1
  fi
}
export -f one_run
export out
printf '%s\n' "vanilla 0 0" "h-detach 0.5 0" "vanilla 0 1" "h-detach 0.5 1" "vanilla 0 2" "h-detach 0.5 2" |
  xargs -P 2 -L 1 bash -c 'one_run "$0" "$1" "$2"'
python -m hdetach report "$out" --out results/analysis/tracked-report

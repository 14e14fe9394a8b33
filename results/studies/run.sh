#!/usr/bin/env bash
# Studies 3 (no gradient clipping) and 4 (c-detach ablation) at the demo's scale, about
# 5 minutes each on an idle 2-core CPU. Run from anywhere with hdetach installed; OUT is
# where the run folders go (checkpoints included); rerunning resumes or reprints.
set -u
OUT=${1:-runs/studies}
COMMON="--T 50 --input-encoding onehot --hidden-size 64 --lr 1e-2 --epochs 12 --steps-per-epoch 250 --n-val 1000 --jobs 2 --threads 1"
hdetach sweep copy $COMMON --clip none --grid p_detach=0,0.25 --seeds 5 --out "$OUT/no-clip"
hdetach report "$OUT/no-clip" --out "$OUT/no-clip/report"
hdetach sweep copy $COMMON --p-detach 0.5 --grid detach_path=h,c --seeds 3 --out "$OUT/c-detach"
hdetach report "$OUT/c-detach" --out "$OUT/c-detach/report"

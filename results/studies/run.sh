#!/usr/bin/env bash
# The small studies of results/studies at the demo's scale (a few minutes each on an idle
# 2-core CPU): no gradient clipping, c-detach, learning rate, copying T=10 with transfer. Run from anywhere with hdetach installed; OUT is
# where the run folders go (checkpoints included); rerunning resumes or reprints.
set -u
OUT=${1:-runs/studies}
COMMON="--T 50 --input-encoding onehot --hidden-size 64 --lr 1e-2 --epochs 12 --steps-per-epoch 250 --n-val 1000 --jobs 2 --threads 1"
hdetach sweep copy $COMMON --clip none --grid p_detach=0,0.25 --seeds 5 --out "$OUT/no-clip"
hdetach report "$OUT/no-clip" --stability --out "$OUT/no-clip/report"
hdetach sweep copy $COMMON --p-detach 0.5 --grid detach_path=h,c --seeds 3 --out "$OUT/c-detach"
hdetach report "$OUT/c-detach" --out "$OUT/c-detach/report"
hdetach sweep copy $COMMON --grid lr=0.001,0.003,0.01,0.03 --grid p_detach=0,0.25 --seeds 3 \
    --out "$OUT/lr"
hdetach report "$OUT/lr" --out "$OUT/lr/report"
hdetach sweep copy ${COMMON/--T 50/--T 10} --grid p_detach=0,0.25,0.5 --seeds 5 --out "$OUT/copy-T10"
for run in "$OUT"/copy-T10/p_detach=*; do hdetach transfer "$run" --T 20 50 100; done
hdetach report "$OUT/copy-T10" --out "$OUT/copy-T10/report"

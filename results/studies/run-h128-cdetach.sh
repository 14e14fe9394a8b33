#!/usr/bin/env bash
# The c-detach ablation at the hidden-128 setting of run-h128.sh: copying T=10, p_detach
# 0.5, detach_path c, seeds 0-2 (one run at a time on one thread); the h-detach runs it
# is compared with are copy-h128-T10's p_detach=0.5 seeds 0-2.
set -u
OUT=${1:-runs/studies-h128}
hdetach sweep copy --T 10 --input-encoding onehot --hidden-size 128 --lr 3e-3 --epochs 80 \
    --steps-per-epoch 250 --n-val 1000 --p-detach 0.5 --detach-path c --seeds 3 --jobs 1 \
    --threads 1 --out "$OUT/c-detach-h128"
hdetach report "$OUT/c-detach-h128" "$OUT"/copy-h128-T10/p_detach=0.5,seed=[012] \
    --threshold 0.9 --baseline detach_path=h --out "$OUT/c-detach-h128/report"

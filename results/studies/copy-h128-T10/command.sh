#!/usr/bin/env bash
# copy-h128-T10: copying T=10 at the setting where the pilots saw vanilla learn (hidden 128,
# lr 3e-3), 80 epochs of 250 minibatches (20,000 steps), p_detach 0 vs 0.5, seeds 0-4 (0-2 first, then 3-4 by the same command with --seeds 5),
# two runs at a time on one thread each; then transfer to T = 20, 50, 100 and the report.
OUT=${1:-runs/studies-h128}
hdetach sweep copy --T 10 --input-encoding onehot --hidden-size 128 --lr 3e-3 --epochs 80 \
    --steps-per-epoch 250 --n-val 1000 --grid p_detach=0,0.5 --seeds 5 --jobs 2 --threads 1 \
    --out "$OUT/copy-h128-T10"
for run in "$OUT"/copy-h128-T10/p_detach=*; do hdetach transfer "$run" --T 20 50 100; done
hdetach report "$OUT/copy-h128-T10" --threshold 0.9 --out "$OUT/copy-h128-T10/report"
PYTHONPATH=src python results/studies/compare_transfer.py "$OUT/copy-h128-T10"
# Extended on 2026-11-27 (09:01 to 09:27 UTC) to p_detach 0 / 0.25 / 0.5 by chain A of
# results/studies/run-h128.sh (the same options, --grid p_detach=0,0.25,0.5 --seeds 5
# --jobs 1; the ten earlier runs were skipped as done), then every run's transfer and the
# report again (report/ here).

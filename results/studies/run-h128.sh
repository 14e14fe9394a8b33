#!/usr/bin/env bash
# The hidden-128 copying studies (hidden 128, lr 3e-3 unless crossed, 80 epochs of 250
# minibatches = 20,000 steps, one-hot input, 1,000 validation sequences), as two chains of
# one run at a time on one thread each, side by side (one process per core):
#   A: copy-h128-T10 extended to p 0 / 0.25 / 0.5 (finished runs are skipped), then
#      copy-h128-T20 (p 0 / 0.25 / 0.5 x 5 seeds);
#   B: no clipping at T=10 (p 0 / 0.25 x 5 seeds), then the learning rate at T=10
#      (1e-3, 1e-2, 3e-2 x p 0 / 0.25 x 3 seeds; lr 3e-3 is copy-h128-T10's seeds 0-2).
# Then transfers and reports. OUT holds the run folders (checkpoints included); rerunning
# resumes interrupted runs and skips finished ones.
set -u
OUT=${1:-runs/studies-h128}
COMMON="--input-encoding onehot --hidden-size 128 --lr 3e-3 --epochs 80 --steps-per-epoch 250 --n-val 1000 --jobs 1 --threads 1"
chain_a() {
    hdetach sweep copy --T 10 $COMMON --grid p_detach=0,0.25,0.5 --seeds 5 --out "$OUT/copy-h128-T10"
    hdetach sweep copy --T 20 $COMMON --grid p_detach=0,0.25,0.5 --seeds 5 --out "$OUT/copy-h128-T20"
}
chain_b() {
    hdetach sweep copy --T 10 $COMMON --clip none --grid p_detach=0,0.25 --seeds 5 \
        --out "$OUT/no-clip-h128"
    hdetach sweep copy --T 10 ${COMMON/--lr 3e-3/} --grid lr=0.001,0.01,0.03 --grid p_detach=0,0.25 \
        --seeds 3 --out "$OUT/lr-h128"
}
chain_a > "$OUT/chain-a.out" 2>&1 &
chain_b > "$OUT/chain-b.out" 2>&1 &
wait
for T in 10 20; do
    for run in "$OUT"/copy-h128-T$T/p_detach=*; do hdetach transfer "$run" --T $((2 * T)) $((5 * T)) $((10 * T)); done
    hdetach report "$OUT/copy-h128-T$T" --threshold 0.9 --out "$OUT/copy-h128-T$T/report"
    PYTHONPATH=src python results/studies/compare_transfer.py "$OUT/copy-h128-T$T"
done
hdetach report "$OUT/no-clip-h128" "$OUT"/copy-h128-T10/p_detach=0.0,seed=* \
    "$OUT"/copy-h128-T10/p_detach=0.25,seed=* --threshold 0.9 --stability --out "$OUT/no-clip-h128/report"
hdetach report "$OUT/lr-h128" "$OUT"/copy-h128-T10/p_detach=0.0,seed=[012] \
    "$OUT"/copy-h128-T10/p_detach=0.25,seed=[012] --threshold 0.9 --out "$OUT/lr-h128/report"

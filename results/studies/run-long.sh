#!/usr/bin/env bash
# Copying at a longer budget (results/studies, copy-long-T10 and copy-long-T20): 60 epochs
# of 250 minibatches (15,000 steps) at T=10 and at T=20, p_detach 0 / 0.25 / 0.5 x 5 seeds,
# one run at a time on one thread (one core: about 80 CPU-minutes on a 2-core AMD EPYC VM);
# then every run's best model copies at 2T, 5T and 10T, and the reports. OUT is where the
# run folders go (checkpoints included); rerunning resumes the sweeps and redoes transfers.
set -u
OUT=${1:-runs/studies-long}
export OMP_NUM_THREADS=1  # transfer and report on one core too
COMMON="--input-encoding onehot --hidden-size 64 --lr 1e-2 --epochs 60 --steps-per-epoch 250 --n-val 1000"
for T in 10 20; do
    hdetach sweep copy --T $T $COMMON --grid p_detach=0,0.25,0.5 --seeds 5 --jobs 1 --threads 1 \
        --out "$OUT/copy-long-T$T" || exit
    for run in "$OUT/copy-long-T$T"/p_detach=*; do
        hdetach transfer "$run" --T $((2 * T)) $((5 * T)) $((10 * T))
    done
    hdetach report "$OUT/copy-long-T$T" --threshold 0.5 --out "$OUT/copy-long-T$T/report"
    # (added after the study ran: the same command was run by hand on its folders)
    python "$(dirname "$0")/compare_transfer.py" "$OUT/copy-long-T$T" \
        > "$OUT/copy-long-T$T/transfer-compare.txt"
done

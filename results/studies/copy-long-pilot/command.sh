#!/usr/bin/env bash
# The pilots of the longer copying study (one vanilla seed each, one core): 40-epochs/
# chose the grid of run-long.sh; after the study, 160-epochs/ asks whether the vanilla LSTM
# learns the task in 40,000 steps at that learning rate and size, h128/ and h128-T/
# whether it does at the paper's hidden size (for the next, larger study).
COMMON="--p-detach 0 --input-encoding onehot --hidden-size 64 --lr 1e-2 --steps-per-epoch 250 --n-val 1000 --grid T=10,20 --seeds 1 --jobs 1 --threads 1"
hdetach sweep copy $COMMON --epochs 40 --out /work/studies-long/pilot
OMP_NUM_THREADS=1 hdetach sweep copy $COMMON --epochs 160 --out /work/studies-long/pilot-160
# h128/: the paper's hidden size, lr 1e-3 (the paper's) and 3e-3, vanilla at T=10, 40,000 steps
OMP_NUM_THREADS=1 hdetach sweep copy --p-detach 0 --T 10 --input-encoding onehot --hidden-size 128 \
    --epochs 160 --steps-per-epoch 250 --n-val 1000 --grid lr=0.001,0.003 --seeds 1 --jobs 1 \
    --threads 1 --out /work/studies-long/pilot-h128
# h128-T/: the same at lr 3e-3, T=20 and T=50, 20,000 steps
OMP_NUM_THREADS=1 hdetach sweep copy --p-detach 0 --input-encoding onehot --hidden-size 128 --lr 3e-3 \
    --epochs 80 --steps-per-epoch 250 --n-val 1000 --grid T=20,50 --seeds 1 --jobs 1 --threads 1 \
    --out /work/studies-long/pilot-h128-T

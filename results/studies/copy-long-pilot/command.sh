#!/usr/bin/env bash
# The pilots of the longer copying study (one vanilla seed at T=10 and at T=20, one core):
# 40-epochs/ chose the grid of run-long.sh; 160-epochs/ (run after it) asks whether the
# vanilla LSTM learns the task in 40,000 steps at this learning rate and size.
COMMON="--p-detach 0 --input-encoding onehot --hidden-size 64 --lr 1e-2 --steps-per-epoch 250 --n-val 1000 --grid T=10,20 --seeds 1 --jobs 1 --threads 1"
hdetach sweep copy $COMMON --epochs 40 --out /work/studies-long/pilot
OMP_NUM_THREADS=1 hdetach sweep copy $COMMON --epochs 160 --out /work/studies-long/pilot-160

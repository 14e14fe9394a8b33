#!/usr/bin/env bash
# The pilot that chose the grid of run-long.sh: one vanilla seed at T=10 and at T=20,
# 40 epochs of 250 minibatches, one core.
hdetach sweep copy --p-detach 0 --input-encoding onehot --hidden-size 64 --lr 1e-2 --epochs 40 \
    --steps-per-epoch 250 --n-val 1000 --grid T=10,20 --seeds 1 --jobs 1 --threads 1 \
    --out /work/studies-long/pilot

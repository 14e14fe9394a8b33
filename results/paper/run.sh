#!/usr/bin/env bash
# The paper's own experiments at the paper's sizes (issue 23), as two chains of population
# sweeps side by side, one process per core, one thread each. Every run is an ordinary run
# folder under OUT (checkpoints included); rerunning this script resumes interrupted runs
# and skips finished ones. Only the training length and the number of seeds are cut.
# The chains are balanced to take about as long as each other before their part-5 study
# (permuted MNIST is split between them by seed, in one folder); the last study of each
# is part 5 of the issue ("if budget remains") and runs for as long as it is given.
#   A: pixel MNIST (p 0 / 0.25 x 3 seeds, 20 epochs), then pixel MNIST without clipping
#      (p 0 / 0.25 x 3 seeds, 10 epochs), then permuted MNIST seed 2 (p 0 / 0.25,
#      20 epochs), then pixel MNIST seed 3, then copying T=300 (p 0 / 0.25 / 0.5 x
#      2 seeds, 30 x 1,000 steps)
#   B: copying T=100, scalar input (p 0 / 0.25 / 0.5 x 3 seeds, 30 x 1,000 steps), then
#      each best model evaluated at T = 200, 500, 1000, 2000, 5000, then permuted MNIST
#      seeds 0 and 1 (p 0 / 0.25, 20 epochs), then permuted MNIST seed 3, then one
#      200-epoch permuted-MNIST run per method (seed 0's 20-epoch runs, trained on)
# Usage: results/paper/run.sh [OUT] [DATA_DIR]   (nice it: it takes both cores)
set -u
OUT=${1:-runs/paper}
DATA=${2:-../shared/data/mnist}
mkdir -p "$OUT"
POP="--engine population --jobs 1 --threads 1 --seeds 3"
chain_a() {
    hdetach sweep mnist --data-dir "$DATA" $POP --grid p_detach=0,0.25 --epochs 20 \
        --out "$OUT/mnist"
    hdetach sweep mnist --data-dir "$DATA" $POP --grid p_detach=0,0.25 --epochs 10 --clip none \
        --out "$OUT/mnist-no-clip"
    # permuted MNIST's third seed: chain B trains seeds 0 and 1 in the same folder
    hdetach sweep pmnist --data-dir "$DATA" $POP --seeds 2-2 --grid p_detach=0,0.25 --epochs 20 \
        --out "$OUT/pmnist"
    # a fourth seed of pixel MNIST: with 3 seeds a side no difference can pass p < 0.05
    hdetach sweep mnist --data-dir "$DATA" $POP --seeds 3-3 --grid p_detach=0,0.25 --epochs 20 \
        --out "$OUT/mnist"
    hdetach sweep copy --T 300 $POP --seeds 2 --grid p_detach=0,0.25,0.5 --epochs 30 \
        --steps-per-epoch 1000 --out "$OUT/copy-T300"
}
chain_b() {
    hdetach sweep copy --T 100 $POP --grid p_detach=0,0.25,0.5 --epochs 30 \
        --steps-per-epoch 1000 --out "$OUT/copy-T100"
    for run in "$OUT"/copy-T100/p_detach=*; do
        # one thread, as the sweeps: the other chain has the other core
        [ -f "$run/transfer.json" ] ||
            OMP_NUM_THREADS=1 hdetach transfer "$run" --T 200 500 1000 2000 5000
    done
    hdetach sweep pmnist --data-dir "$DATA" $POP --seeds 0,1 --grid p_detach=0,0.25 --epochs 20 \
        --out "$OUT/pmnist"
    hdetach sweep pmnist --data-dir "$DATA" $POP --seeds 3-3 --grid p_detach=0,0.25 --epochs 20 \
        --out "$OUT/pmnist"
    # the paper's 200 epochs: seed 0's finished 20-epoch runs, copied and trained on (a run
    # trained on to more epochs equals one started with them: tests/test_train.py)
    if [ ! -d "$OUT/pmnist-200" ]; then
        mkdir -p "$OUT/pmnist-200.part"
        cp -r "$OUT"/pmnist/p_detach=*,seed=0 "$OUT/pmnist-200.part/" &&
            mv "$OUT/pmnist-200.part" "$OUT/pmnist-200"
    fi
    hdetach sweep pmnist --data-dir "$DATA" $POP --seeds 1 --grid p_detach=0,0.25 \
        --epochs 200 --out "$OUT/pmnist-200"
}
chain_a >> "$OUT/chain-a.out" 2>&1 &
chain_b >> "$OUT/chain-b.out" 2>&1 &
wait

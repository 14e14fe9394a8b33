#!/usr/bin/env bash
# Issue 33's campaign: the studies that make the claim rows rest on more than one
# permutation and more than four seeds, as two chains side by side (one process per core,
# one thread each, each chain one population). Every run is an ordinary run folder under
# OUT (checkpoints included); rerunning this script resumes interrupted runs and skips
# finished ones.
#   A: pixel MNIST seeds 4 to 7 (p 0 / 0.25, 20 epochs), added to the study of seeds 0 to 3
#      (its record, results/paper/mnist/sweep.json, is put in OUT/mnist first, so the
#      sweep extends it and the folder keeps one record of all eight seeds)
#   B: permuted MNIST with a permutation per seed (--perm-from-seed: the authors' draw),
#      seeds 0 to 3 (p 0 / 0.25, 20 epochs)
# then part 5 of issue 23, started again (its run folders were on another machine):
#   A: copying T = 300 (p 0 / 0.25 / 0.5 x 2 seeds, 30 x 1,000 steps)
#   B: permuted MNIST at the paper's 200 epochs, a permutation per seed, h-detach switched
#      off for the last 39 epochs as the authors' published commands do (--anneal-p 40 in
#      their code: README, "Annealing"); seed 0 first, then more seeds as the budget allows
# Usage: results/paper/run-33.sh [OUT] [DATA_DIR]   (nice it: it takes both cores)
set -u
OUT=${1:-runs/paper}
DATA=${2:-../shared/data/mnist}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT/mnist"
[ -f "$OUT/mnist/sweep.json" ] || cp "$HERE/mnist/sweep.json" "$OUT/mnist/"
POP="--engine population --jobs 1 --threads 1"
chain_a() {
    hdetach sweep mnist --data-dir "$DATA" $POP --seeds 4-7 --grid p_detach=0,0.25 --epochs 20 \
        --out "$OUT/mnist" &&
        hdetach sweep copy --T 300 $POP --seeds 2 --grid p_detach=0,0.25,0.5 --epochs 30 \
            --steps-per-epoch 1000 --out "$OUT/copy-T300"
}
chain_b() {
    hdetach sweep pmnist --perm-from-seed --data-dir "$DATA" $POP --seeds 0-3 \
        --grid p_detach=0,0.25 --epochs 20 --out "$OUT/pmnist-perm-per-seed" &&
        for seed in 0 1 2 3; do
            hdetach sweep pmnist --perm-from-seed --data-dir "$DATA" $POP --seeds "$seed-$seed" \
                --grid p_detach=0,0.25 --epochs 200 --anneal-epochs 39 \
                --out "$OUT/pmnist-200-perm-per-seed" || break
        done
}
chain_a >> "$OUT/chain-a.out" 2>&1 &
chain_b >> "$OUT/chain-b.out" 2>&1 &
wait

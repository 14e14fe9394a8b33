#!/usr/bin/env bash
# The paper's experiments with the authors' protocols (the defaults of `hdetach train`).
# Hours to days of compute each: pick the lines you need. Results go to runs/paper/.
set -euo pipefail
out=runs/paper

# Copying, T=100 and T=300: vanilla vs h-detach p=0.25 and p=0.5, three seeds each.
for T in 100 300; do
  for p in 0 0.25 0.5; do
    for seed in 0 1 2; do
      hdetach train copy --T "$T" --p-detach "$p" --seed "$seed" --run-dir "$out/copy$T/p$p-s$seed"
    done
  done
done

# Transfer copying: the T=100 models evaluated at longer gaps.
for run in "$out"/copy100/*; do
  hdetach transfer "$run" --T 100 200 400 500 1000 2000
done

# Pixel MNIST and permuted MNIST (fixed permutation, --perm-seed 0), h-detach p=0.25 vs vanilla.
hdetach data mnist
for task in mnist pmnist; do
  for p in 0 0.25; do
    hdetach train "$task" --p-detach "$p" --run-dir "$out/$task/p$p-s0"
  done
done

for exp in copy100 copy300 mnist pmnist; do
  hdetach report "$out/$exp"
done

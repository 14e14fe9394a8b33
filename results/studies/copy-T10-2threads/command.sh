#!/usr/bin/env bash
# copy-T10 again with one run at a time on 2 threads (other float rounding), then transfer.
set -u
cd /work/studies
/usr/bin/time -f "wall %e s user %U s" python -m hdetach sweep copy --T 10 --input-encoding onehot \
    --hidden-size 64 --lr 1e-2 --epochs 12 --steps-per-epoch 250 --n-val 1000 --jobs 1 --threads 2 \
    --grid p_detach=0,0.25,0.5 --seeds 5 --out /work/studies/copy-T10-2threads > copy-T10-2threads.log 2>&1
for run in /work/studies/copy-T10-2threads/p_detach=*; do
    python -m hdetach transfer "$run" --T 20 50 100 >> copy-T10-2threads-transfer.log 2>&1
done

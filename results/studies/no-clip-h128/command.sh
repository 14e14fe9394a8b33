#!/usr/bin/env bash
# no-clip-h128: made by results/studies/run-h128.sh, run from the repository root as
#   bash results/studies/run-h128.sh /work/studies-h128
# (its sweep for this folder, then the transfers and report it lists); the run folders
# were then copied here without checkpoints and TensorBoard files.
bash results/studies/run-h128.sh "${1:-runs/studies-h128}"
# report-vs-clipped/: the same runs against the clipped ones of copy-h128-T10:
OUT=${1:-runs/studies-h128}
hdetach report "$OUT/no-clip-h128" "$OUT"/copy-h128-T10/p_detach=0.0,seed=* \
    "$OUT"/copy-h128-T10/p_detach=0.25,seed=* --threshold 0.9 --baseline clip=norm \
    --out "$OUT/no-clip-h128/report-vs-clipped"

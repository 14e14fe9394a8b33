#!/usr/bin/env bash
# copy-h128-T20: made by results/studies/run-h128.sh, run from the repository root as
#   bash results/studies/run-h128.sh /work/studies-h128
# (its sweep for this folder, then the transfers and report it lists); the run folders
# were then copied here without checkpoints and TensorBoard files.
bash results/studies/run-h128.sh "${1:-runs/studies-h128}"

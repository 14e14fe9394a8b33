#!/usr/bin/env bash
# c-detach-h128: made by results/studies/run-h128-cdetach.sh from the repository root:
bash results/studies/run-h128-cdetach.sh "${1:-runs/studies-h128}"

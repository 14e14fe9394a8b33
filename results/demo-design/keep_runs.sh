#!/usr/bin/env bash
# Keep what each rerun's run folders say per seed (config, summary, transfer: a few kB per
# run; no checkpoints), so that alternatives.py can be rerun from the repository.
# Usage: results/demo-design/keep_runs.sh OUT NAME   (OUT as given to rerun.sh)
set -eu
out=$1 name=$2
HERE=$(cd "$(dirname "$0")" && pwd)
for rerun in "$out/$name"/jobs*-rerun-*; do
    [ -f "$HERE/$name/$(basename "$rerun").txt" ] || continue  # finished reruns only
    for run in "$rerun"/p_detach=*; do
        dest="$HERE/$name/runs/$(basename "$rerun")/$(basename "$run")"
        mkdir -p "$dest"
        cp "$run"/config.json "$run"/summary.json "$run"/transfer.json "$dest"/
    done
done

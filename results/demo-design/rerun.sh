#!/usr/bin/env bash
# Issue 33 part 1: how often does a demo setting give the same headline verdict? One
# candidate, rerun on disjoint seed sets (rerun K trains seeds S K to S K + S - 1 per model,
# S = $SEEDS, default 5) with
# the demo's own command; each rerun's printed output is kept as rerun-K.txt with its
# wall time and the CPU time of the demo and its workers, and summarize.py tallies the
# verdicts.
# Usage: results/demo-design/rerun.sh NAME OUT FIRST LAST JOBS -- DEMO OPTIONS...
#   e.g. rerun.sh h128-lr3e-3-20ep runs/demo-design 0 9 2 -- --hidden-size 128 --lr 3e-3 --epochs 20
set -eu
name=$1 out=$2 first=$3 last=$4 jobs=$5
seeds=${SEEDS:-5}
shift 6  # the name, out, first, last, jobs and the "--"
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$HERE/$name" "$out/$name"
for k in $(seq "$first" "$last"); do
    dest="$HERE/$name/jobs$jobs-rerun-$k.txt"
    [ -f "$dest" ] && continue
    start=$(date +%s)
    /usr/bin/time -o "$dest.cpu" -f "cpu seconds: %U user, %S system" hdetach demo --jobs "$jobs" --first-seed $((seeds * k)) --seeds "$seeds" --out "$out/$name/jobs$jobs-rerun-$k" "$@" \
        > "$dest.part" 2> "$out/$name/jobs$jobs-rerun-$k.err"
    echo "wall seconds: $(( $(date +%s) - start ))" >> "$dest.part"
    cat "$dest.cpu" >> "$dest.part" && rm "$dest.cpu"
    mv "$dest.part" "$dest"
done

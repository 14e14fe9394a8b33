#!/usr/bin/env bash
# One-shot GPU check of the triton backend (issue 4): the CUDA correctness tests, then
# the benchmark table (cuDNN vs the authors' loop vs hdetach's fused and triton
# backends) and the float32 error over 784 steps, written to benchmarks/results_<card>.md.
# Run from anywhere on a CUDA machine with torch, triton and numpy installed (pytest
# optional); no network needed. Budget: under 5 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"

python - <<'PY' || exit 1
import torch, triton
assert torch.cuda.is_available(), "no CUDA device visible"
print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  "
      f"cuDNN {torch.backends.cudnn.version()}  triton {triton.__version__}")
PY

status=0
if python -c "import pytest" 2>/dev/null; then
    echo "== CUDA correctness tests"
    timeout 150 python -m pytest tests/ops/test_triton.py -m cuda -q -rA -s -p no:cacheprovider \
        || status=$?
else
    echo "== pytest is not installed: CUDA tests skipped (the benchmark's error table still runs)"
fi

echo "== benchmark"
timeout 240 python benchmarks/gpu_bench.py || status=$?
exit "$status"

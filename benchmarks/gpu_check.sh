#!/usr/bin/env bash
# One-shot GPU check of the triton backend: the CUDA correctness tests, then
# the benchmark table (cuDNN vs the authors' loop vs hdetach's fused and triton
# backends) and the float32 error over 784 steps, written to benchmarks/results_<card>.md;
# then the same for the opt-in split-hidden kernels (a per-step barrier across programs),
# run last and under their own timeouts because a barrier bug would hang, not fail.
# Run from anywhere on a CUDA machine with torch, triton and numpy installed (pytest
# optional); no network needed. Budget: under 10 minutes (populations included).
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
have_pytest=0
python -c "import pytest" 2>/dev/null && have_pytest=1
pytest_args=(tests/ops/test_triton.py tests/ops/test_cuda.py -m cuda -q -rA -s -p no:cacheprovider)

if [ "$have_pytest" = 1 ]; then
    echo "== CUDA correctness tests"
    timeout -k 5 100 python -m pytest "${pytest_args[@]}" -k "not split" || status=$?
else
    echo "== pytest is not installed: CUDA tests skipped (the benchmark's error table still runs)"
fi

echo "== benchmark"
timeout -k 5 140 python benchmarks/gpu_bench.py || status=$?

echo "== populations at the pixel-MNIST shape: K = 1 and 10 as one PopulationLSTM vs one after another (fused, then triton)"
timeout -k 5 90 python -m hdetach.experiments.bench.cli --population 1 10 --shapes pmnist --repeats 3 || status=$?
HDETACH_TRITON_AUTO=1 timeout -k 5 90 python -m hdetach.experiments.bench.cli --population 1 10 --shapes pmnist --repeats 3 || status=$?
echo "== triton population check (K=10, pixel MNIST, against 10 single calls)"
timeout -k 5 120 python benchmarks/triton_population_check.py || status=$?

if [ "$have_pytest" = 1 ]; then
    echo "== split-hidden correctness tests"
    if timeout -k 5 30 python -m pytest "${pytest_args[@]}" -k split; then
        echo "== split-hidden benchmark"
        timeout -k 5 30 python benchmarks/gpu_bench.py --split || status=$?
    else
        status=1
        echo "split-hidden tests failed or timed out: benchmark of the split kernels skipped"
    fi
fi
exit "$status"

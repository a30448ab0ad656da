#!/usr/bin/env bash
# Every GPU check of this round in one run (about 5 minutes on one H200):
#   1. the tests that take a device (precision, Net2 equivariance incl. residual guidance)
#      with CUDA visible;
#   2. `duoseg demo --quick --device cuda` (the code path) and the `cuda` preset's
#      report (the comparison with a GPU budget), both copied to $OUT.
# Usage: OUT=DIR benchmarks/gpu_checks.sh
set -uo pipefail
out=${OUT:-gpu-checks}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$out/gpu.txt"
python3 -m pytest -q -x tests/plugins/test_precision.py tests/plugins/test_net2.py \
  tests/core/test_guidance.py -p no:cacheprovider 2>&1 | tail -5 | tee "$out/pytest.txt"
start=$(date +%s)
duoseg demo --quick --device cuda --out "$out/quick" > "$out/quick.log" 2>&1
echo "quick demo on cuda: exit $? in $(( $(date +%s) - start )) s" | tee -a "$out/summary.txt"
start=$(date +%s)
timeout "${DEMO_LIMIT:-330}" duoseg demo --device cuda --out "$out/demo" > "$out/demo.log" 2>&1
echo "cuda demo: exit $? in $(( $(date +%s) - start )) s" | tee -a "$out/summary.txt"
rm -rf "$out"/*/data "$out"/*/predictions "$out"/*/runs/*/*.safetensors

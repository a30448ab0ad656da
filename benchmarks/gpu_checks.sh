#!/usr/bin/env bash
# Every GPU check of this round in one run (about 9 minutes on one H200):
#   1. the `cuda` demo preset: 10 training, 1 validation and 3 test phantom CTs of
#      512 x 512 x 256 at cardiac-CT resolution; wang2018, the strong 2 mm baseline and
#      the full-resolution sliding-window U-Net, each trained for the same wall-clock;
#      Dice, surface distances and the 2 mm ceiling (docs/demo.md);
#   2. `duoseg predict` throughput per GPU with the demo's two-stage run
#      (benchmarks/gpu_predict_ranks.py), if time is left.
# Everything worth keeping is packed into $OUT/gpu_results.tgz (the device tool brings
# back few files).
# Usage: OUT=DIR benchmarks/gpu_checks.sh
set -uo pipefail
out=${OUT:-gpu-checks}
mkdir -p "$out"
export PATH="$(python3 -c 'import os, sys; print(os.path.dirname(sys.executable))'):$PATH"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$out/gpu.txt"
start=$(date +%s)
timeout "${DEMO_LIMIT:-480}" duoseg demo --device cuda --out "$out/demo" > "$out/demo.log" 2>&1
echo "cuda demo: exit $? in $(( $(date +%s) - start )) s" | tee -a "$out/summary.txt"
start=$(date +%s)
timeout "${RANKS_LIMIT:-75}" python3 benchmarks/gpu_predict_ranks.py "$out/ranks.json" \
  --run "$out/demo/runs/two_stage" --cases 2 > "$out/ranks.log" 2>&1
echo "predict throughput: exit $? in $(( $(date +%s) - start )) s" | tee -a "$out/summary.txt"
tail -c 20000 "$out/demo.log" > "$out/demo_tail.log"
tar czf "$out/gpu_results.tgz" -C "$out" --exclude='*/data' --exclude='*/predictions' \
  --exclude='*.safetensors' --exclude='demo.log' demo demo_tail.log ranks.log summary.txt \
  gpu.txt $(ls "$out"/ranks.json >/dev/null 2>&1 && echo ranks.json)
rm -rf "$out/demo" "$out/demo.log"
ls -la "$out"

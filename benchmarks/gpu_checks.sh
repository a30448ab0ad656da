#!/usr/bin/env bash
# Every GPU check, in two runs that each fit one device call (10 minutes at most):
#   benchmarks/gpu_checks.sh speed   (about 5 minutes on one H200; issue 15)
#     1. gpu_fullres.py: 512 x 512 x {128, 256} end to end, Zarr in to Zarr out, fp32
#        and bf16, the paper's Net2 and the 3x3-decoder variant;
#     2. gpu_train.py: iterations/s and the loader's share per step at the paper's
#        settings, eager and with train.compile=true; the projected 12,800 iterations.
#   benchmarks/gpu_checks.sh demo    (about 9 minutes; issue 14)
#     3. the `cuda` demo preset: 10 training, 1 validation and 3 test phantom CTs of
#        512 x 512 x 256 at cardiac-CT resolution; wang2018, the strong 2 mm baseline and
#        the full-resolution sliding-window U-Net, each trained for the same wall-clock;
#        Dice, surface distances and the 2 mm ceiling (docs/demo.md);
#     4. `duoseg predict` throughput per GPU with the demo's two-stage run
#        (benchmarks/gpu_predict_ranks.py), if time is left.
# Everything worth keeping is packed into $OUT/gpu_results.tgz (the device tool brings
# back few files).
# Usage: OUT=DIR benchmarks/gpu_checks.sh speed|demo
set -uo pipefail
what=${1:?usage: gpu_checks.sh speed|demo}
out=${OUT:-gpu-checks}
mkdir -p "$out"
export PATH="$(python3 -c 'import os, sys; print(os.path.dirname(sys.executable))'):$PATH"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$out/gpu.txt"

timed() {  # timed NAME LIMIT COMMAND...: run, log, note the exit status and seconds
  local name=$1 limit=$2 start
  shift 2
  start=$(date +%s)
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  echo "$name: exit $? in $(( $(date +%s) - start )) s" | tee -a "$out/summary.txt"
  tail -n 25 "$out/$name.log"
}

if [ "$what" = speed ]; then
  timed fullres_paper 60 python3 benchmarks/gpu_fullres.py --depths 128 256 \
    --json "$out/fullres_paper.json"
  timed fullres_3x3 50 python3 benchmarks/gpu_fullres.py --depths 256 \
    --net2 decoder_kernel=3 --json "$out/fullres_3x3.json"
  timed train_eager 100 python3 benchmarks/gpu_train.py --json "$out/train_eager.json"
  timed train_compiled 150 python3 benchmarks/gpu_train.py --json "$out/train_compiled.json" \
    --override train.compile=true networks.net2.params.decoder_kernel=3
  tar czf "$out/gpu_results.tgz" -C "$out" --exclude=gpu_results.tgz .
elif [ "$what" = demo ]; then
  timed demo "${DEMO_LIMIT:-480}" duoseg demo --device cuda --out "$out/demo"
  timed ranks "${RANKS_LIMIT:-75}" python3 benchmarks/gpu_predict_ranks.py "$out/ranks.json" \
    --run "$out/demo/runs/two_stage" --cases 2
  tail -c 20000 "$out/demo.log" > "$out/demo_tail.log"
  tar czf "$out/gpu_results.tgz" -C "$out" --exclude='*/data' --exclude='*/predictions' \
    --exclude='*.safetensors' demo demo_tail.log ranks.log summary.txt gpu.txt \
    $(ls "$out"/ranks.json >/dev/null 2>&1 && echo ranks.json)
  rm -rf "$out/demo" "$out/demo.log"
else
  echo "unknown check $what: speed or demo" >&2
  exit 2
fi
ls -la "$out"

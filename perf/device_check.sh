#!/usr/bin/env bash
# One pass of every GPU check, for a lent CUDA machine that has torch but not Ray; under 8 minutes.
# Usage (repo root): DATA=<folder holding data/cifar10/cifar-10-batches-py> OUT=<dir> bash perf/device_check.sh
# A CPU smoke run of the same script (small sizes, no GPU-only steps): DEVICE=cpu SMOKE=1 DATA=.. bash perf/device_check.sh
set -uo pipefail
export PYTHONUNBUFFERED=1 NB201_SHARED="${DATA:?}" PYTHONPATH="$PWD"
OUT="${OUT:-/tmp/device-out}"; mkdir -p "$OUT"
DEVICE="${DEVICE:-cuda}"
PY="${PY:-python3}"
if [ "${SMOKE:-0}" = 1 ]; then SIZE=(--width 4 --cells-per-stage 1 --steps 1 --rounds 1 --warmup 1 --ks 1 2 --batch-size 32)
else SIZE=(--width 16 --cells-per-stage 5 --steps 30 --rounds 3 --ks 1 2 4 6 8); fi
step() { echo; echo "=== $* ($(date +%T))"; }

step environment
$PY -c "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
[ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader

step "fused training: K models of one cell as one network, with and without CUDA graphs"
timeout 180 $PY perf/fused_throughput.py --device "$DEVICE" "${SIZE[@]}" --json-out "$OUT/fused.json" 2>&1 | tee "$OUT/fused.txt"

step "GPU tests (bf16 autocast, channels_last) and fused exactness"
timeout 100 $PY -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_fused.py 2>&1 | tail -5

step "precision: bf16 autocast against fp32 (and fp32 against itself), same cells and seeds"
if [ "${SMOKE:-0}" = 1 ]; then PREC=(--width 4 --cells-per-stage 1 --image-size 16 --epochs 1 --max-train 256 --cells 913)
else PREC=(--epochs 3); fi
timeout 150 $PY perf/precision_check.py --device "$DEVICE" --data-dir "$DATA/data/cifar10:$DATA/data/cifar10/jpeg_q75" \
  "${PREC[@]}" --json-out "$OUT/precision.json" 2>&1 | tee "$OUT/precision.txt"

[ "$DEVICE" = cuda ] || { step "done (CPU smoke: GPU-only steps skipped)"; exit 0; }

step "planner calibration on this GPU (synthetic images, real engine)"
timeout 90 $PY -m pipeline plan --config configs/cifar10-full.yaml --calibrate --gpus 8 2>&1 | tee "$OUT/plan.txt"

step "packing: aggregate img/s with k separate processes on one GPU (today's rule, for the comparison)"
timeout 110 $PY perf/gpu_packing.py --config configs/cifar10-full.yaml --ks 1 4 8 --steps 30 2>&1 | tee "$OUT/packing.txt"
step done

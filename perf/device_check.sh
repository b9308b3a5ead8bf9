#!/usr/bin/env bash
# One pass of every GPU check, for a lent CUDA machine that has torch but not Ray.
# Usage (repo root): DATA=<folder holding data/cifar10/cifar-10-batches-py> OUT=<dir> bash perf/device_check.sh
set -uo pipefail
export PYTHONUNBUFFERED=1 NB201_SHARED="${DATA:?}" PYTHONPATH="$PWD"
OUT="${OUT:-/tmp/device-out}"; mkdir -p "$OUT"
BEST='|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|'
step() { echo; echo "=== $* ($(date +%T))"; }

step environment
python3 -c "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.cuda.get_device_name())"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader

step "GPU tests (bf16 autocast, channels_last)"
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tail -5

step "one training at benchmark size (C=16, N=5), real CIFAR-10, 3 epochs"
timeout 180 python3 -m pipeline train --arch "$BEST" --dataset cifar10 --data-dir "$DATA/data/cifar10" \
  --epochs 3 --width 16 --cells-per-stage 5 --device cuda --json > "$OUT/train.json" && \
  python3 -c "import json; r=json.load(open('$OUT/train.json')); print({k: r[k] for k in ('status','eval_acc','images_per_s','train_s','device','precision')})"

step "planner calibration on this GPU (synthetic images, real engine)"
timeout 180 python3 -m pipeline plan --config configs/cifar10-full.yaml --calibrate --gpus 8 2>&1 | tee "$OUT/plan.txt"

step "packing: aggregate img/s with k nets on one GPU"
timeout 300 python3 perf/gpu_packing.py --config configs/cifar10-full.yaml --ks 1 2 4 8 --steps 30 2>&1 | tee "$OUT/packing.txt"

step "engine vs official-style loop on this machine"
timeout 240 python3 perf/train_throughput.py --data-dir "$DATA/data/cifar10" --device cuda --sizes 16x5:2560:2 \
  2>&1 | tail -15 | tee "$OUT/throughput.txt"
step done

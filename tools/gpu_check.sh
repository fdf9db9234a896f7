#!/usr/bin/env bash
# Issue #5's GPU figures in one run on a lent GPU machine (about 5-10 minutes on an H100/H200):
# sd15-512 at batch 1 (memory target) and batch 8 (MFU target), sdxl-1024 (memory target, bf16) and
# sdxl-1024-fp8 (the 6 GB target; our side stores the base in fp8),
# each with ours vs the reference recipe, MFU, peak memory, host syncs per step and the fit estimate's
# ratio; then tests/engine/test_gpu.py (no host sync in the step, fp8 on CUDA, sampling leaves nothing behind).
#
# The device image has torch, transformers, peft, accelerate, safetensors, pillow and psutil, but not
# diffusers, tomli-w or platformdirs. Prepare them here once (they travel as wheels, see
# /work/.library/device/README.md), then run this script with `carry: [".whl"]`:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl diffusers tomli-w platformdirs \
#     pytest pluggy iniconfig pygments packaging
# (A checkout where this was done once keeps them in .whl/, ignored by git.)
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.csv"
python3 -m lora_studio bench --preset sd15-512 --json "$OUT/sd15-512.json" 2>&1 | tee "$OUT/sd15-512.log"
python3 -m lora_studio bench --preset sd15-512 --batch-size 8 --json "$OUT/sd15-512-b8.json" 2>&1 | tee "$OUT/sd15-512-b8.log"
python3 -m lora_studio bench --preset sdxl-1024 --steps 10 --json "$OUT/sdxl-1024.json" 2>&1 | tee "$OUT/sdxl-1024.log"
python3 -m lora_studio bench --preset sdxl-1024-fp8 --steps 10 --json "$OUT/sdxl-1024-fp8.json" 2>&1 | tee "$OUT/sdxl-1024-fp8.log"
python3 -m pytest -q -p no:cacheprovider tests/engine/test_gpu.py 2>&1 | tee "$OUT/test_gpu.log"

#!/usr/bin/env bash
# Decode step time of the CUDA model runner (bf16 weights + KV, cuBLASLt) on dummy weights in
# real shapes, against the roofline (bf16 weight bytes + KV bytes per step / copy bandwidth).
# On the device machine, from the repository root, after tools/bundle.sh (carry bundle/):
#   tools/device/decode_step_bench.sh [models] [batches]
set -uo pipefail
MODELS=${1:-tinyllama-1.1b,llama-3-8b}
BATCHES=${2:-1,16,64,256}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
LT=$(find /usr/local /opt /usr/lib -name 'libcublasLt.so.13*' 2>/dev/null | head -1)
export LD_LIBRARY_PATH=$PWD/bundle/lib:$(dirname "${LT:-/nonexistent/x}")
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
bundle/bin/kvasir bench-engine --device cuda --models "$MODELS" --batch "$BATCHES" \
  --prompt-len 128 --decode-steps 32 --threads "$(nproc)" 2>&1 | tee "$OUT/decode_step.md"

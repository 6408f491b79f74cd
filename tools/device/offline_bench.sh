#!/usr/bin/env bash
# Offline throughput on the H200: `kvasir bench-offline --device cuda` on llama-3-8b dummy
# weights (bf16) for the issue's workload (256 x 1000 in / 1000 out) and the peer's workload
# (256 x 512 / 256), then HF transformers generate_batch on the peer workload, all in one run.
# On the device machine, from the repository root, after tools/bundle.sh (carry bundle/ or
# bundle.tar.xz; BUNDLE=dir for another bundle):  tools/device/offline_bench.sh   (PEER=0 skips transformers; WORKLOADS
# overrides "N:IN:OUT ...")
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${BUNDLE:-bundle}
[[ -d $B ]] || tar xJf "$B.tar.xz"
LT=$(find /usr/local /opt /usr/lib -name 'libcublasLt.so.13*' 2>/dev/null | head -1)
export LD_LIBRARY_PATH=$PWD/$B/lib:$(dirname "${LT:-/nonexistent/x}")
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv \
  | tee "$OUT/gpu.txt"
status=0
for w in ${WORKLOADS:-256:1000:1000 256:512:256}; do
  IFS=: read -r n in out <<<"$w"
  "$B/bin/kvasir" bench-offline --device cuda --load-format dummy --dummy-config llama-3-8b \
    --threads "$(nproc)" --num-prompts "$n" --input-len "$in" --output-len "$out" \
    --max-num-seqs 256 --max-num-batched-tokens "${MAX_BATCHED:-8192}" ${KVASIR_ARGS:-} 2>&1 \
    | tee -a "$OUT/kvasir_offline.md"
  [[ ${PIPESTATUS[0]} -ne 0 ]] && status=1
done
if [[ ${PEER:-1} == 1 ]]; then
  PYTHONUNBUFFERED=1 python3 tools/device/hf_offline_peer.py --num-prompts 256 --input-len 512 \
    --output-len 256 2>&1 | tee "$OUT/hf_offline.md"
  [[ ${PIPESTATUS[0]} -ne 0 ]] && status=1
fi
exit $status

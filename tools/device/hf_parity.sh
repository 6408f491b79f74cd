#!/usr/bin/env bash
# Runs on the device machine (PyTorch + transformers there): converts stories260K to the HF
# layout with `kvasir convert`, then compares Kvasir's CPU fp32 logits with
# transformers.LlamaForCausalLM (fp32) on the same prompt, and the tokenizers' ids.
# usage: tools/device/hf_parity.sh   (after tools/bundle.sh; bundle/ carried)
set -euo pipefail
cd "$(dirname "$0")/../.."
export LD_LIBRARY_PATH=$PWD/bundle/lib
K=bundle/bin/kvasir
OUTDIR=${OUT:-/tmp/out}
mkdir -p "$OUTDIR"
HF=/tmp/stories260K-hf
$K convert --from bundle/models/stories260K --to $HF
IDS=$(echo "Once upon a time, there was a little girl named Lily. She loved to play." | $K tokenize --model $HF --bos | tr ' ' ',')
$K logits --model $HF --ids "$IDS" > "$OUTDIR/kvasir_logits.json"
$K logits --model bundle/models/stories260K --ids "$IDS" > "$OUTDIR/kvasir_llama2c_logits.json"
python3 tools/device/hf_parity.py $HF "$OUTDIR/kvasir_logits.json" "$OUTDIR/kvasir_llama2c_logits.json" | tee "$OUTDIR/hf_parity.txt"

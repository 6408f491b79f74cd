#!/usr/bin/env bash
# Embedded (`kvasir serve`) vs cluster (`kvasir cluster`, separate router / decoder / attention
# processes) on stories260K: `kvasir bench serve` at 1, 16 and 64 concurrent streams, printed as
# a markdown table. Run from the repository root after a build:
#   tools/bench/compare_modes.sh [build/bin/kvasir] [decoders] [attention workers]
set -euo pipefail
KVASIR=${1:-build/bin/kvasir}
DECODERS=${2:-2}
ATTENTION=${3:-2}
MODEL=${KVASIR_MODEL_DIR:-../shared/models/stories260K}
OUT=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$OUT"' EXIT

wait_healthy() {
  for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$1/health" >/dev/null && return 0
    sleep 0.1
  done
  echo "server on port $1 never became healthy" >&2
  return 1
}

run_mode() {  # mode port
  for c in 1 16 64; do
    n=$((c == 1 ? 32 : c * 8))
    "$KVASIR" bench serve --base-url "http://127.0.0.1:$2" --model stories260K \
      --tokenizer "$MODEL" --dataset-name random --random-input-len 64 \
      --random-output-len 128 --num-prompts "$n" --max-concurrency "$c" --ignore-eos --seed 1 \
      --percentile-metrics ttft,tpot,itl,e2el --metric-percentiles 50,99 --save-result \
      --result-dir "$OUT" --result-filename "$1-$c.json" >/dev/null 2>&1
  done
}

"$KVASIR" serve --port 8100 --model "$MODEL" --log-level warn >/dev/null 2>"$OUT/serve.log" &
pid=$!
wait_healthy 8100 || { tail -20 "$OUT/serve.log" >&2; exit 1; }
run_mode embedded 8100
kill "$pid"; wait "$pid" 2>/dev/null || true

"$KVASIR" cluster --decoders "$DECODERS" --attention "$ATTENTION" --port 8101 --model "$MODEL" \
  --log-level warn >/dev/null 2>"$OUT/cluster.log" &
pid=$!
wait_healthy 8101 || { tail -20 "$OUT/cluster.log" >&2; exit 1; }
run_mode cluster 8101
kill "$pid"; wait "$pid" 2>/dev/null || true

python3 - "$OUT" <<'PY'
import json, sys, os
d = sys.argv[1]
print("| mode | concurrency | requests | req/s | output tok/s | TTFT p50 ms | TTFT p99 ms | TPOT p50 ms | TPOT p99 ms |")
print("|---|---|---|---|---|---|---|---|---|")
for mode in ("embedded", "cluster"):
    for c in (1, 16, 64):
        j = json.load(open(os.path.join(d, f"{mode}-{c}.json")))
        print(f"| {mode} | {c} | {j['completed']} | {j['request_throughput']:.1f} | "
              f"{j['output_throughput']:.0f} | {j['p50_ttft_ms']:.1f} | {j['p99_ttft_ms']:.1f} | "
              f"{j['p50_tpot_ms']:.2f} | {j['p99_tpot_ms']:.2f} |")
PY

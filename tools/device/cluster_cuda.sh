#!/usr/bin/env bash
# A CUDA decoder over host attention: the same greedy requests (stories260K, the bundle's
# default model) through
#   A  kvasir serve --device cuda                          (KV in the GPU's bf16 pool: the reference)
#   B  kvasir serve --device cuda --attention-shards 2     (dense on the GPU, KV on 2 in-process
#                                                           host shards, bf16 like the GPU pool)
#   C  kvasir cluster --device cuda --decoders 1 --attention 2   (real processes, gRPC data plane)
#   D  kvasir cluster --device cuda --decoders 2 --attention 2   (two CUDA decoders on one GPU)
#   E  kvasir serve (CPU fp32, for scale)
#   F  kvasir serve --device cuda --attention-workers host:2 --decoder-kv-memory 0.05
#      (the hybrid executor: stories260K's 20 tables x 5 blocks of 16 tokens on the GPU for all
#      sequences, so each spills to the 2 host workers after its first block or so)
#   G  kvasir cluster --device cuda --decoders 1 --attention 2 --decoder-kv-memory 0.05
# Prints per configuration how many completions equal A's text exactly, and the streamed TTFT /
# TPOT means. On the device machine: BUNDLE=bundle tools/device/cluster_cuda.sh
set -uo pipefail
B=${BUNDLE:-bundle}
[[ -d $B ]] || tar xJf "$B.tar.xz"
LT=$(find /usr/local /opt /usr/lib -name 'libcublasLt.so.13*' 2>/dev/null | head -1)
export LD_LIBRARY_PATH=$PWD/$B/lib:$(dirname "${LT:-/nonexistent/x}")
export KVASIR_MODEL_DIR=$PWD/$B/models/stories260K
K=$PWD/$B/bin/kvasir
OUTDIR=${WORKDIR:-/tmp/cluster_cuda}
mkdir -p "$OUTDIR"
PORT=${PORT:-18500}
status=0

wait_ok() {  # port, seconds
  for _ in $(seq 1 $(($2 * 5))); do
    python3 - "$1" <<'PY' 2>/dev/null && return 0
import json, sys, urllib.request
h = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=2).read())
sys.exit(0 if h.get("status") == "ok" else 1)
PY
    sleep 0.2
  done
  return 1
}

run_config() {  # name, command...
  local name=$1; shift
  PORT=$((PORT + 1))
  "$@" --port "$PORT" --log-level warn > "$OUTDIR/$name.log" 2>&1 &
  local pid=$!
  if ! wait_ok "$PORT" 120; then
    echo "$name: not ready; log:"; tail -20 "$OUTDIR/$name.log"; kill "$pid"; wait "$pid"
    status=1; return
  fi
  python3 - "$PORT" "$OUTDIR/$name.json" <<'PY' || status=1
import json, sys, threading, time, urllib.request
port, out = sys.argv[1], sys.argv[2]
prompts = ["Once upon a time", "Lily saw a dog", "Tom had a ball", "The sun was hot",
           "A little bird", "Sam and Mia went to the park", "There was a big tree",
           "One day, a cat", "The boy was sad", "Mom made a cake", "In the garden",
           "The old man smiled"]
res = [None] * len(prompts)
def one(i):
    body = {"model": "stories260K", "prompt": prompts[i], "max_tokens": 64, "temperature": 0,
            "stream": True, "ignore_eos": True}
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions",
                                 json.dumps(body).encode(), {"Content-Type": "application/json"})
    t0 = time.time(); times = []; text = ""
    with urllib.request.urlopen(req, timeout=120) as r:
        for line in r:
            line = line.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]": continue
            c = json.loads(line[6:])
            if "error" in c: raise RuntimeError(c["error"])
            piece = c["choices"][0]["text"]
            if piece: times.append(time.time()); text += piece
    res[i] = {"text": text, "ttft_ms": (times[0] - t0) * 1e3 if times else None,
              "tpot_ms": (times[-1] - times[0]) * 1e3 / (len(times) - 1) if len(times) > 1 else None}
# 4 at a time
for start in range(0, len(prompts), 4):
    ts = [threading.Thread(target=one, args=(i,)) for i in range(start, min(start + 4, len(prompts)))]
    [t.start() for t in ts]; [t.join() for t in ts]
json.dump(res, open(out, "w"))
PY
  kill "$pid"; wait "$pid" 2>/dev/null
}

run_config A "$K" serve --device cuda
run_config B "$K" serve --device cuda --attention-shards 2 --threads 4
run_config C "$K" cluster --device cuda --decoders 1 --attention 2 --threads 4
run_config D "$K" cluster --device cuda --decoders 2 --attention 2 --threads 4
run_config E "$K" serve --threads 4
run_config F "$K" serve --device cuda --attention-workers host:2 --decoder-kv-memory 0.05 --threads 4
run_config G "$K" cluster --device cuda --decoders 1 --attention 2 --decoder-kv-memory 0.05 --threads 4
python3 - "$OUTDIR" <<'PY' || status=1
import json, os, sys
d = sys.argv[1]
load = lambda n: json.load(open(f"{d}/{n}.json")) if os.path.exists(f"{d}/{n}.json") else None
ref = load("A")
names = {"A": "serve --device cuda (GPU KV, reference)",
         "B": "serve --device cuda --attention-shards 2 (host KV)",
         "C": "cluster --device cuda --decoders 1 --attention 2",
         "D": "cluster --device cuda --decoders 2 --attention 2",
         "E": "serve (CPU fp32)",
         "F": "serve --device cuda --attention-workers host:2 (hybrid, 0.05 MiB GPU KV)",
         "G": "cluster --device cuda --decoders 1 --attention 2 --decoder-kv-memory 0.05"}
print("| configuration | completions equal to A | mean chars in common with A | TTFT ms | TPOT ms |")
print("| --- | --- | --- | --- | --- |")
bad = False
for n, label in names.items():
    r = load(n)
    if r is None or ref is None or any(x is None for x in r):
        print(f"| {label} | no result | | | |"); bad = True; continue
    eq = sum(a["text"] == b["text"] for a, b in zip(r, ref))
    common = []
    for a, b in zip(r, ref):
        k = 0
        while k < min(len(a["text"]), len(b["text"])) and a["text"][k] == b["text"][k]: k += 1
        common.append(k)
    mean = lambda xs: sum(xs) / len(xs)
    print(f"| {label} | {eq}/{len(r)} | {mean(common):.1f} of {mean([len(b['text']) for b in ref]):.1f} "
          f"| {mean([x['ttft_ms'] for x in r]):.2f} | {mean([x['tpot_ms'] for x in r]):.2f} |")
    if n in "BCDFG" and eq != len(r):
        for i, (a, b) in enumerate(zip(r, ref)):
            if a["text"] != b["text"]:
                print(f"    {n} prompt {i} differs:\n      A: {b['text']!r}\n      {n}: {a['text']!r}")
                break
sys.exit(1 if bad else 0)
PY
exit $status

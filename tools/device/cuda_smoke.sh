#!/usr/bin/env bash
# `--device cuda` through the user-facing commands on the H200, with the embedded default model
# (stories260K from the bundle): `kvasir generate` greedy on CUDA next to CPU, then
# `kvasir serve --device cuda` answering an OpenAI completion (plain and streamed).
# On the device machine: BUNDLE=bundle-cudarun tools/device/cuda_smoke.sh
set -uo pipefail
B=${BUNDLE:-bundle}
[[ -d $B ]] || tar xJf "$B.tar.xz"
LT=$(find /usr/local /opt /usr/lib -name 'libcublasLt.so.13*' 2>/dev/null | head -1)
export LD_LIBRARY_PATH=$PWD/$B/lib:$(dirname "${LT:-/nonexistent/x}")
export KVASIR_MODEL_DIR=$PWD/$B/models/stories260K
K=$B/bin/kvasir
status=0
for dev in cpu cuda; do
  echo "== generate --device $dev (greedy, 60 tokens)"
  "$K" generate --device "$dev" --prompt "Once upon a time" --temperature 0 --max-tokens 60 \
    --log-level warn || status=1
done
PORT=${PORT:-18411}
"$K" serve --device cuda --port "$PORT" --log-level warn &
pid=$!
for _ in $(seq 1 100); do
  python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/health')" \
    2>/dev/null && break
  sleep 0.2
done
python3 - "$PORT" <<'PY' || status=1
import json, sys, urllib.request
port = sys.argv[1]
def post(body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    return urllib.request.urlopen(req, timeout=60).read().decode()
r = json.loads(post({"model": "stories260K", "prompt": "Once upon a time", "max_tokens": 40,
                     "temperature": 0}))
print("serve --device cuda, greedy:", repr(r["choices"][0]["text"]), r["usage"])
r = json.loads(post({"model": "stories260K", "prompt": "Lily saw a dog", "max_tokens": 40,
                     "temperature": 0.8, "top_p": 0.9, "seed": 3}))
print("seeded sampling:", repr(r["choices"][0]["text"]))
s = post({"model": "stories260K", "prompt": "Tom had a ball", "max_tokens": 30, "stream": True,
          "temperature": 0})
chunks = [l for l in s.splitlines() if l.startswith("data: ") and l != "data: [DONE]"]
print("streamed", len(chunks), "chunks:",
      repr("".join(json.loads(c[6:])["choices"][0]["text"] for c in chunks)))
PY
kill "$pid"; wait "$pid" 2>/dev/null
exit $status

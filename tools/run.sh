#!/usr/bin/env bash
# Sets up and runs the main job on a fresh Debian 12 machine: installs packages, builds the
# `kvasir` binary, and runs the embedded default model (stories260K). Extra arguments are passed
# to `kvasir generate` (e.g. --prompt "..." --temperature 0).
set -euo pipefail
cd "$(dirname "$0")/.."
./tools/install_deps.sh
cmake -S . -B build -G Ninja -DKVASIR_WERROR=ON >/dev/null
cmake --build build -j "${JOBS:-$(nproc)}" --target kvasir
if [[ $# -eq 0 ]]; then
  set -- --prompt "Once upon a time" --max-tokens 256
fi
exec build/bin/kvasir generate "$@"

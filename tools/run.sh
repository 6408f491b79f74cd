#!/usr/bin/env bash
# Sets up and runs the main job on a fresh Debian 12 machine: installs packages, builds the
# `kvasir` binary, and serves the embedded default model (stories260K) over the
# OpenAI-compatible HTTP API on port 8000 (all roles in one process). Extra arguments go to
# `kvasir serve` (e.g. --host 0.0.0.0 --port 9000 --api-key KEY). Stop with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
./tools/install_deps.sh
cmake -S . -B build -G Ninja -DKVASIR_WERROR=ON >/dev/null
cmake --build build -j "${JOBS:-$(nproc)}" --target kvasir
exec build/bin/kvasir serve --log-level info "$@"

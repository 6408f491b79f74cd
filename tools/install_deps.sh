#!/usr/bin/env bash
# Installs every Debian package Kvasir needs to build and test, on a fresh Debian 12 as root.
# Idempotent: skips apt-get when everything is already present.
set -euo pipefail
PKGS=(build-essential cmake ninja-build ccache pkg-config git ca-certificates curl
  libabsl-dev libspdlog-dev libfmt-dev libgtest-dev libgmock-dev nlohmann-json3-dev
  libopenblas-dev libpcre2-dev libcurl4-openssl-dev libssl-dev libcpp-httplib-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  python3 python3-numpy python3-yaml docker-compose nodejs npm clang)
missing=()
for p in "${PKGS[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
# nodejs/npm may come from elsewhere (nodesource, nvm): accept any working node + npm.
if command -v node >/dev/null && command -v npm >/dev/null; then
  filtered=()
  for p in "${missing[@]}"; do [[ "$p" == nodejs || "$p" == npm ]] || filtered+=("$p"); done
  missing=("${filtered[@]}")
fi
if ((${#missing[@]})); then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

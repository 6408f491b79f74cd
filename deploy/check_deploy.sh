#!/usr/bin/env bash
# Checks the deploy files without a Docker engine (run by ctest from the source root).
#   check_deploy.sh compose   docker-compose.yml is valid (`docker-compose config -q`, with the
#                             default and with overridden settings) and its services form the
#                             cluster: only the role subcommands and their flags, addresses that
#                             name existing services and the ports they listen on, distinct
#                             decoder ids, healthchecks and depends_on in start order.
#   check_deploy.sh image     runtime-packages.txt owns every library $KVASIR_BIN_DIR/kvasir
#                             links, and healthcheck.sh passes against a live `kvasir serve`
#                             (gRPC and HTTP) and fails against a closed port.
set -euo pipefail
cd "$(dirname "$0")"

check_compose() {
  command -v docker-compose >/dev/null || {
    echo "docker-compose not found: run tools/install_deps.sh" >&2
    exit 1
  }
  # Without a cluster secret the file must refuse to render: the roles would refuse to start.
  if env -u KVASIR_CLUSTER_SECRET docker-compose -f docker-compose.yml config -q 2>/dev/null; then
    echo "docker-compose.yml renders without KVASIR_CLUSTER_SECRET" >&2
    exit 1
  fi
  export KVASIR_CLUSTER_SECRET=compose-check
  docker-compose -f docker-compose.yml config -q
  KVASIR_MODELS=/srv/models KVASIR_MODEL=/models/stories260K KVASIR_API_KEY=k KVASIR_PORT=9000 \
    docker-compose -f docker-compose.yml config -q
  docker-compose -f docker-compose.yml config | python3 check_compose.py
}

check_image() {
  local kvasir="${KVASIR_BIN_DIR:-../build/bin}/kvasir"
  [[ -x "$kvasir" ]] || {
    echo "no kvasir binary at $kvasir" >&2
    exit 1
  }
  # Every library the binary links directly must come from a listed package (their own
  # dependencies come with them). Not checked: sanitizer runtimes and what is not Debian's
  # (the CUDA toolkit under /usr/local): the image builds with KVASIR_CUDA=OFF, no sanitizers.
  local wanted missing=0 lib path pkg
  wanted=$(grep -v '^#' runtime-packages.txt)
  while read -r lib; do
    [[ $lib =~ ^lib(a|ub|t|l|hwa)san\. ]] && continue
    path=$(ldd "$kvasir" | awk -v l="$lib" '$1 == l { print $3 }')
    [[ -n "$path" ]] || { echo "ldd does not resolve $lib" >&2; missing=1; continue; }
    [[ $(readlink -f "$path") == /usr/local/* ]] && continue
    pkg=$(dpkg -S "$path" 2>/dev/null || dpkg -S "$(readlink -f "$path")" 2>/dev/null ||
      dpkg -S "/usr$path" 2>/dev/null || true)
    pkg=${pkg%%:*}
    if [[ -z "$pkg" ]] || ! grep -qx "$pkg" <<<"$wanted"; then
      echo "runtime-packages.txt lacks the package of $lib ($path): '${pkg:-none}'" >&2
      missing=1
    fi
  done < <(readelf -d "$kvasir" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  ((missing == 0))

  local dir pid http grpc
  dir=$(mktemp -d)
  "$kvasir" serve --port 0 --grpc-port 0 --threads 1 --log-level warn >"$dir/ports" &
  pid=$!
  # shellcheck disable=SC2064  # expanded now: the locals are gone when the trap runs
  trap "kill $pid 2>/dev/null || true; rm -rf '$dir'" EXIT
  for _ in $(seq 300); do
    [[ $(wc -l <"$dir/ports") -ge 2 ]] && break
    kill -0 $pid 2>/dev/null || { echo "kvasir serve exited" >&2; exit 1; }
    sleep 0.1
  done
  http=$(sed -n 1p "$dir/ports")
  grpc=$(sed -n 2p "$dir/ports")
  [[ -n "$grpc" ]] || { echo "kvasir serve printed no ports" >&2; exit 1; }
  ready=0
  for _ in $(seq 100); do
    if sh ./healthcheck.sh grpc "$grpc" 2>/dev/null; then ready=1; break; fi
    sleep 0.1
  done
  ((ready)) || { sh ./healthcheck.sh grpc "$grpc"; exit 1; }
  sh ./healthcheck.sh http "$http"
  if sh ./healthcheck.sh grpc "$http" 2>/dev/null; then
    echo "healthcheck.sh grpc passed against an HTTP/1 port" >&2
    exit 1
  fi
  kill $pid
  wait $pid || true
  if sh ./healthcheck.sh grpc "$grpc" 2>/dev/null; then
    echo "healthcheck.sh grpc passed against a stopped server" >&2
    exit 1
  fi
  echo "runtime-packages.txt covers $kvasir; healthcheck.sh grpc/http: ok"
}

case "${1:-}" in
  compose) check_compose ;;
  image) check_image ;;
  *)
    echo "usage: $0 compose|image" >&2
    exit 2
    ;;
esac

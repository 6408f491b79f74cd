#!/usr/bin/env bash
# The one-way dependency rule of DESIGN.md ("kernels -> runtime -> model/kvcache/attention ->
# scheduler -> roles -> api/CLI"), checked on the project's own #include "dir/..." lines of
# every non-test source: each folder may include only the folders listed for it. Tests
# (*_test.cc, testing_util.h) may reach upward to drive what they test. Protobuf and gRPC
# headers stay in src/transport/ and the CLI (tools/).
# Usage: tools/ci/check_layers.sh [repo root]; exit 1 listing every violation.
set -euo pipefail
root="${1:-$(cd "$(dirname "$0")/../.." && pwd)}"
cd "$root"

low="common kernels runtime"
declare -A allowed=(
  [src/common]="common"
  [kernels]="common kernels"
  [src/runtime]="$low"
  [src/kvcache]="$low kvcache"
  [src/attention]="$low kvcache attention"
  [src/model]="$low kvcache attention model"
  [scheduler]="$low scheduler"
  [src/decoder]="$low kvcache attention model scheduler decoder"
  # router -> api: the request types and chat template the completion service takes
  # (api/openai_types.h, api/chat_template.h) still live in api/; a known edge to move down.
  [src/router]="$low kvcache attention model scheduler decoder router api/openai_types.h api/chat_template.h"
  [src/transport]="$low kvcache attention model scheduler decoder router transport kvasir"
  [src/api]="$low kvcache attention model scheduler decoder router api"
)
# The project's top-level include roots (anything else, e.g. absl/ or gtest/, is third party).
project="common kernels runtime kvcache attention model scheduler decoder router transport api tools kvasir"

fail=0
for dir in "${!allowed[@]}"; do
  [[ -d "$dir" ]] || continue
  while IFS= read -r file; do
    case "$file" in *_test.cc|*_test.cu|*/testing_util.h) continue ;; esac
    while IFS= read -r line; do
      inc="${line#*\"}"
      inc="${inc%%\"*}"
      top="${inc%%/*}"
      [[ "$inc" == */* ]] || continue
      [[ " $project " == *" $top "* ]] || continue
      ok=0
      for a in ${allowed[$dir]}; do
        if [[ "$a" == */* ]]; then
          [[ "$inc" == "$a" ]] && ok=1
        elif [[ "$top" == "$a" ]]; then
          ok=1
        fi
      done
      if [[ $ok == 0 ]]; then
        echo "$file: includes \"$inc\": $dir may include only ${allowed[$dir]}"
        fail=1
      fi
    done < <(grep -E '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$file" || true)
  done < <(find "$dir" -type f \( -name '*.h' -o -name '*.cc' -o -name '*.cu' -o -name '*.cuh' \))
done
# gRPC and generated protobuf headers, quoted or not, outside src/transport/ (and tools/).
while IFS= read -r hit; do
  case "${hit%%:*}" in *_test.cc) continue ;; esac
  echo "$hit (protobuf/gRPC stay in src/transport/)"
  fail=1
done < <(grep -rnE '^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"](grpcpp/|grpc/|google/protobuf/|[^">]*\.pb\.h)' \
           kernels scheduler src --include='*.h' --include='*.cc' --include='*.cu' --include='*.cuh' |
         grep -v '^src/transport/' || true)
if [[ $fail == 0 ]]; then echo "layers ok: no include breaks the one-way dependency rule"; fi
exit $fail

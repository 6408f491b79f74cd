#!/usr/bin/env bash
# Builds Kvasir for the H200 device machine (sm_90 + PTX) and copies the binaries with every
# non-glibc shared library they need into bundle/ (git-ignored), ready to `carry`.
# On the device: export LD_LIBRARY_PATH=$PWD/bundle/lib:<dir of the device's libcublasLt.so.13>
# (tools/device/*.sh find it); bundle/bin/kvasir ...
# Also copies the default model (stories260K) into bundle/models, since ../shared does not travel.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-bundle}
# BUNDLE_CONFIGURE=0 bundles an existing build as it is configured (e.g. BUILD=build, the test
# build, sm_90): no second full build on a 2-core machine.
if [[ "${BUNDLE_CONFIGURE:-1}" != 0 ]]; then
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKVASIR_BUILD_TESTS=${KVASIR_BUNDLE_TESTS:-OFF} \
    -DCMAKE_CUDA_ARCHITECTURES="90-real;90-virtual" ${BUNDLE_CMAKE_ARGS:-} >/dev/null
fi
cmake --build "$BUILD" -j "${JOBS:-$(nproc)}" ${BUNDLE_TARGETS:+--target $BUNDLE_TARGETS}
rm -rf bundle
mkdir -p bundle/bin bundle/lib bundle/models
# BUNDLE_BINS: only these binaries of $BUILD/bin (default all); stripped, the tree that travels
# is at most 64 MiB.
for f in "$BUILD"/bin/*; do
  if [[ -n "${BUNDLE_BINS:-}" && " $BUNDLE_BINS " != *" $(basename "$f") "* ]]; then continue; fi
  [[ -x "$f" && -f "$f" ]] && cp "$f" bundle/bin/ && strip --strip-debug "bundle/bin/$(basename "$f")"
done
# Every resolved library except glibc's own (the device has a newer glibc).
for f in bundle/bin/*; do
  ldd "$f" | awk '/=> \//{print $3}'
done | sort -u | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libresolv.so*|libcuda.so*) ;;
    libstdc++.so*|libgcc_s.so*) ;;  # the device (Ubuntu 24.04) has newer ones
    libcublas*.so*) ;;  # ~0.6 GB, over the carry limit: use the device's CUDA 13 copy (see below)
    *) cp -L "$lib" bundle/lib/ ;;
  esac
done
for d in ../shared/models/stories260K shared/models/stories260K; do
  if [[ -f "$d/model.bin" ]]; then cp -r "$d" bundle/models/; break; fi
done
du -sh bundle
if [[ "${BUNDLE_XZ:-0}" == 1 ]]; then
  tar cf - bundle | xz -T2 -6 > bundle.tar.xz
  ls -l bundle.tar.xz
fi

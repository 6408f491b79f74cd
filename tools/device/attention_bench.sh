#!/usr/bin/env bash
# Paged decode attention on the H200: Kvasir's kernel (kernels/attention/paged_decode_bench,
# with --check) and PyTorch SDPA (tools/device/sdpa_peer.py) on the same Llama-3-8B decode
# shapes, in one device run; both tables and the side-by-side ratio go to $OUT.
#
# here:   tools/device/attention_bench.sh pack [build dir] [bundle dir]
#           copies paged_decode_bench (built with -DCMAKE_CUDA_ARCHITECTURES="90-real;90-virtual",
#           as tools/bundle.sh does) and its non-glibc libraries into the bundle (default
#           bundle-attnbench, git-ignored); tools/bundle.sh's bundle/ works as well.
# device: run(command="tools/device/attention_bench.sh run bundle-attnbench", carry=["bundle-attnbench"])
#           BENCH_ARGS / SDPA_ARGS pass extra flags (e.g. "--lens 2048,8192"); NCU=1 adds an
#           Nsight Compute profile (no clock control) of two bf16 launches: B=256 L=8192 (one split)
#           and B=1 L=131072 (split-KV + merge), into $OUT/ncu.txt.
set -uo pipefail
cd "$(dirname "$0")/../.."
MODE=${1:-run}

if [[ $MODE == pack ]]; then
  set -e
  BUILD=${2:-build-attnbench}
  BUNDLE=${3:-bundle-attnbench}
  rm -rf "$BUNDLE"
  mkdir -p "$BUNDLE/bin" "$BUNDLE/lib"
  cp "$BUILD/bin/paged_decode_bench" "$BUNDLE/bin/"
  strip --strip-debug "$BUNDLE/bin/paged_decode_bench"
  # Same library filter as tools/bundle.sh: glibc, libstdc++ and libgcc come from the device.
  ldd "$BUNDLE/bin/paged_decode_bench" | awk '/=> \//{print $3}' | while read -r lib; do
    case "$(basename "$lib")" in
      libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libresolv.so*|libcuda.so*) ;;
      libstdc++.so*|libgcc_s.so*) ;;
      *) cp -L "$lib" "$BUNDLE/lib/" ;;
    esac
  done
  du -sh "$BUNDLE"
  exit 0
fi

BUNDLE=${2:-bundle-attnbench}
export LD_LIBRARY_PATH="$PWD/$BUNDLE/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
OUTDIR=${OUT:-/tmp/attention-bench}
mkdir -p "$OUTDIR"
status=0
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem,temperature.gpu,power.draw \
  --format=csv | tee "$OUTDIR/gpu.txt"

# shellcheck disable=SC2086
"$BUNDLE/bin/paged_decode_bench" --check --csv "$OUTDIR/kvasir.csv" ${BENCH_ARGS:-} 2>&1 \
  | tee "$OUTDIR/kvasir_bench.txt"
rc=${PIPESTATUS[0]}
echo "paged_decode_bench rc=$rc"
[[ $rc -ne 0 ]] && status=1

# shellcheck disable=SC2086
PYTHONUNBUFFERED=1 python3 tools/device/sdpa_peer.py --csv "$OUTDIR/sdpa.csv" \
  --kvasir-csv "$OUTDIR/kvasir.csv" ${SDPA_ARGS:-} 2>&1 | tee "$OUTDIR/sdpa_peer.txt"
rc=${PIPESTATUS[0]}
echo "sdpa_peer rc=$rc"
[[ $rc -ne 0 ]] && status=1

if [[ ${NCU:-0} == 1 ]]; then
  NCU_BIN=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  if [[ -n "$NCU_BIN" ]]; then
    for cfg in "256 8192 PagedDecodeKernel 1" "1 131072 PagedDecodeKernel|MergeAttentionKernel 2"; do
      read -r b l kernels count <<<"$cfg"
      echo "== ncu B=$b L=$l bf16 ==" >>"$OUTDIR/ncu.txt"
      timeout 180 "$NCU_BIN" --clock-control none --section SpeedOfLight \
        --section MemoryWorkloadAnalysis --section Occupancy --section LaunchStats \
        --section WarpStateStats --section SchedulerStats -k "regex:$kernels" -c "$count" \
        "$BUNDLE/bin/paged_decode_bench" --dtypes bf16 --batches "$b" --lens "$l" --reps 3 \
        --min-ms 0.1 >>"$OUTDIR/ncu.txt" 2>&1
      echo "ncu B=$b L=$l rc=$?"
    done
  else
    echo "ncu not found"
  fi
fi

nvidia-smi --query-gpu=clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv \
  | tee -a "$OUTDIR/gpu.txt"
exit $status

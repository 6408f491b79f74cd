#!/usr/bin/env bash
# Runs the kernel tests on a GPU machine from a bundle built on the development machine:
#   here:   build the *_test targets with -DCMAKE_CUDA_ARCHITECTURES="90-real;90-virtual", copy
#           them to bundle-kernels/bin and their non-glibc shared libraries to bundle-kernels/lib;
#   there:  kernels/run_gpu_tests.sh [bundle dir]   (logs in /tmp/kernel-test-logs, archived to $OUT when set)
set -uo pipefail
BUNDLE=${1:-bundle-kernels}
LOGS=/tmp/kernel-test-logs
mkdir -p "$LOGS"
export LD_LIBRARY_PATH="$PWD/$BUNDLE/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv | tee "$LOGS/gpu.txt"
status=0
summary=""
for t in "$BUNDLE"/bin/*_test; do
  name=$(basename "$t")
  start=$(date +%s%N)
  "$t" --gtest_color=no >"$LOGS/$name.log" 2>&1
  rc=$?
  secs=$(awk -v a="$start" -v b="$(date +%s%N)" 'BEGIN{print (b-a)/1e9}')
  [[ $rc -ne 0 ]] && status=1
  summary+="$(printf '%-26s rc=%d %6.1fs  %s' "$name" "$rc" "$secs" \
    "$(grep -E '^\[  (PASSED|FAILED|SKIPPED) *\] [0-9]' "$LOGS/$name.log" | tr '\n' ' ')")"$'\n'
done
# Memory checker on the short paged-decode cases and the merge, where available.
SAN=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
if [[ -n "$SAN" ]]; then
  timeout 180 "$SAN" --tool memcheck --leak-check no "$BUNDLE/bin/paged_decode_test" \
    --gtest_filter='PagedDecode.MatchesReferenceGrid:MergeAttention.*' >"$LOGS/memcheck.log" 2>&1
  summary+="memcheck paged_decode_test rc=$? $(grep -E 'ERROR SUMMARY' "$LOGS/memcheck.log" | tail -1)"$'\n'
  timeout 90 "$SAN" --tool racecheck "$BUNDLE/bin/paged_decode_test" \
    --gtest_filter='PagedDecode.MatchesReferenceGrid' >"$LOGS/racecheck.log" 2>&1
  summary+="racecheck paged_decode_test rc=$? $(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY' "$LOGS/racecheck.log" | tail -1)"$'\n'
  # The prefill kernel's shared-memory tiles and the sampling kernel's histograms.
  if [[ -x "$BUNDLE/bin/paged_prefill_test" ]]; then
    timeout 180 "$SAN" --tool memcheck --leak-check no "$BUNDLE/bin/paged_prefill_test" \
      --gtest_filter='*DecodeRows*:*OtherHeadDims*' >"$LOGS/memcheck_prefill.log" 2>&1
    summary+="memcheck paged_prefill_test rc=$? $(grep -E 'ERROR SUMMARY' "$LOGS/memcheck_prefill.log" | tail -1)"$'\n'
    timeout 180 "$SAN" --tool racecheck "$BUNDLE/bin/paged_prefill_test" \
      --gtest_filter='*DecodeRows*' >"$LOGS/racecheck_prefill.log" 2>&1
    summary+="racecheck paged_prefill_test rc=$? $(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY' "$LOGS/racecheck_prefill.log" | tail -1)"$'\n'
  fi
  if [[ -x "$BUNDLE/bin/sampling_test" ]]; then
    timeout 180 "$SAN" --tool racecheck "$BUNDLE/bin/sampling_test" \
      --gtest_filter='*Greedy*:*Reference*' >"$LOGS/racecheck_sampling.log" 2>&1
    summary+="racecheck sampling_test rc=$? $(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY' "$LOGS/racecheck_sampling.log" | tail -1)"$'\n'
  fi
fi
grep -h '^\[[a-z_ ]*\]' "$LOGS"/*_test.log | sort | uniq | head -80
grep -h -B2 -A8 'Failure' "$LOGS"/*_test.log | head -60
echo "$summary" | tee "$LOGS/summary.txt"
# At most a few files come back from the device tool: one archive.
[[ -n "${OUT:-}" ]] && tar czf "$OUT/kernel-test-logs.tar.gz" -C /tmp kernel-test-logs
exit $status

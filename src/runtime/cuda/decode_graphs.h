// CUDA graphs of pure-decode steps for CudaModelRunner: a step whose entries each bring one
// token is padded up to a bucket batch size, and its device work (the layers, the logits GEMM,
// device sampling: ~16 launches per layer) is recorded once per (bucket, attention plan) by
// stream capture and replayed with one cudaGraphLaunch. The per-step inputs travel through
// device buffers that keep their addresses across replays (see CudaModelRunner::Forward).
#pragma once

#include <cuda_runtime.h>

#include <compare>
#include <cstdint>
#include <functional>
#include <map>
#include <vector>

#include "common/status.h"

namespace kvasir::cuda_internal {

// Largest batch a decode graph is captured for; larger pure-decode steps run eagerly (their
// GEMMs are long enough that launch gaps no longer matter).
inline constexpr int32_t kMaxGraphBatch = 256;

// Batch sizes graphs are captured for, ascending: powers of two up to 32, then steps of 16 up to
// 128 and of 32 up to 256, so that past 32 rows (where a GEMM's time starts to grow with its
// rows) padding adds at most a quarter; none above max_seqs, and min(max_seqs, kMaxGraphBatch)
// itself closes the list.
std::vector<int32_t> DecodeGraphBuckets(int32_t max_seqs);

// The KV length a graph's split-KV plan is made for, given the step's longest attention range:
// the next power of two from 128 up, at most max_context. A plan stays correct for any shorter
// range (the last split takes the rest, empty splits exit at once), so one graph serves a whole
// class of lengths, and ranges up to 128 tokens plan as the eager path does (no split).
int32_t GraphPlanKvLen(int32_t max_kv_len, int32_t max_context);

struct DecodeGraphKey {
  int32_t batch = 0;  // the bucket
  int32_t num_splits = 1;
  int32_t kv_chunk_size = 0;
  auto operator<=>(const DecodeGraphKey&) const = default;
};

// The instantiated graphs of one runner, by key; owns them.
class DecodeGraphCache {
 public:
  // Failed captures of one key before it stays eager (the eager run in between performs the
  // one-time kernel set-up that a first capture may trip over).
  static constexpr int kMaxCaptureAttempts = 2;

  DecodeGraphCache() = default;
  DecodeGraphCache(const DecodeGraphCache&) = delete;
  DecodeGraphCache& operator=(const DecodeGraphCache&) = delete;
  ~DecodeGraphCache();

  // The graph captured for `key`, or null.
  cudaGraphExec_t Find(const DecodeGraphKey& key) const;
  // False once kMaxCaptureAttempts captures of `key` failed.
  bool MayCapture(const DecodeGraphKey& key) const;
  // Records the work `enqueue` puts on `stream` (thread-local capture: nothing runs, and only
  // this thread's capture-unsafe calls break it) and instantiates it under `key`. On failure
  // the capture is ended, the error cleared and counted, and the stream is usable again.
  absl::StatusOr<cudaGraphExec_t> Capture(const DecodeGraphKey& key, cudaStream_t stream,
                                          const std::function<absl::Status()>& enqueue);
  // Destroys every graph (the buffers they use moved); failure counts stay.
  void Clear();
  size_t size() const { return graphs_.size(); }

 private:
  std::map<DecodeGraphKey, cudaGraphExec_t> graphs_;
  std::map<DecodeGraphKey, int> failures_;
};

}  // namespace kvasir::cuda_internal

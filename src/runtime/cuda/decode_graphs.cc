#include "runtime/cuda/decode_graphs.h"

#include <algorithm>

#include "runtime/cuda/cuda_status.h"

namespace kvasir::cuda_internal {

std::vector<int32_t> DecodeGraphBuckets(int32_t max_seqs) {
  const int32_t cap = std::min(max_seqs, kMaxGraphBatch);
  std::vector<int32_t> buckets;
  for (int32_t b = 1; b < cap;) {
    buckets.push_back(b);
    b = b < 32 ? 2 * b : b < 128 ? b + 16 : b + 32;
  }
  if (cap >= 1) buckets.push_back(cap);
  return buckets;
}

int32_t GraphPlanKvLen(int32_t max_kv_len, int32_t max_context) {
  int64_t len = 128;
  while (len < max_kv_len) len *= 2;
  return static_cast<int32_t>(std::max<int64_t>(std::min<int64_t>(len, max_context), max_kv_len));
}

DecodeGraphCache::~DecodeGraphCache() { Clear(); }

cudaGraphExec_t DecodeGraphCache::Find(const DecodeGraphKey& key) const {
  auto it = graphs_.find(key);
  return it == graphs_.end() ? nullptr : it->second;
}

bool DecodeGraphCache::MayCapture(const DecodeGraphKey& key) const {
  auto it = failures_.find(key);
  return it == failures_.end() || it->second < kMaxCaptureAttempts;
}

absl::StatusOr<cudaGraphExec_t> DecodeGraphCache::Capture(
    const DecodeGraphKey& key, cudaStream_t stream, const std::function<absl::Status()>& enqueue) {
  auto fail = [&](absl::Status st) {
    (void)cudaGetLastError();
    ++failures_[key];
    return st;
  };
  cudaError_t e = cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal);
  if (e != cudaSuccess) return fail(CudaStatus(e, "cudaStreamBeginCapture"));
  const absl::Status enqueued = enqueue();
  cudaGraph_t graph = nullptr;
  e = cudaStreamEndCapture(stream, &graph);  // ended even when enqueue failed
  if (!enqueued.ok() || e != cudaSuccess) {
    if (graph != nullptr) (void)cudaGraphDestroy(graph);
    return fail(enqueued.ok() ? CudaStatus(e, "cudaStreamEndCapture") : enqueued);
  }
  cudaGraphExec_t exec = nullptr;
  e = cudaGraphInstantiate(&exec, graph, 0);
  (void)cudaGraphDestroy(graph);
  if (e != cudaSuccess) return fail(CudaStatus(e, "cudaGraphInstantiate"));
  graphs_[key] = exec;
  return exec;
}

void DecodeGraphCache::Clear() {
  for (auto& [key, exec] : graphs_) (void)cudaGraphExecDestroy(exec);
  graphs_.clear();
}

}  // namespace kvasir::cuda_internal

// Merges partial attention results (o, lse) of the same query heads (CUDA), exactly like
// MergeAttentionRef (paged_attention_ref.h), for `count` independent groups in one launch:
//   M = max_j lse_j, out = Σ_j e^{lse_j − M} o_j / Σ_j e^{lse_j − M},
//   out_lse = M + ln Σ_j e^{lse_j − M}; all parts empty (lse = −inf) gives out = 0, −inf.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace kvasir::cuda {

struct MergeAttentionParams {
  const float* o_parts = nullptr;    // [count, n_parts, rows, head_dim]
  const float* lse_parts = nullptr;  // [count, n_parts, rows]
  int64_t count = 0;
  int32_t n_parts = 0;
  int32_t rows = 0;  // query heads per group
  int32_t head_dim = 0;
  float* out = nullptr;      // [count, rows, head_dim], group g at out + g * out_stride
  int64_t out_stride = 0;    // elements between groups; 0 means rows * head_dim
  float* out_lse = nullptr;  // [count, rows] out, may be null
  // Launch as a programmatic dependent (PDL, sm_90+) of the kernel just before it on the stream:
  // the merge grid may be scheduled while that kernel drains and waits, before reading anything,
  // for it to complete. Only for a producer launched directly before on the same stream.
  bool programmatic_launch = false;
};

cudaError_t InvokeMergeAttention(const MergeAttentionParams& p, cudaStream_t stream);

}  // namespace kvasir::cuda

// CPU reference of paged partial attention (DESIGN.md, "The math that makes splitting exact").
//
// One call covers one (sequence, layer, kv_head) and the `group` query heads that share that
// kv head (GQA): every K/V row read serves all of them. It attends over the token range
// [begin, end) of a head-granular page table and returns the normalized partial output
// o = Σ softmax(s) V over that range and its log-sum-exp lse = m + ln Σ exp(s − m).
// An empty range gives o = 0 and lse = −inf, which merges as a no-op.
#pragma once

#include <cstdint>

namespace kvasir {

struct PagedAttentionParams {
  const float* k_pool = nullptr;        // [num_blocks, block_size, head_dim]
  const float* v_pool = nullptr;        // [num_blocks, block_size, head_dim]
  const int32_t* block_table = nullptr; // [ceil(end / block_size)] block ids of this head
  int32_t block_size = 16;
  int32_t head_dim = 0;
  int32_t begin = 0;  // first token (inclusive)
  int32_t end = 0;    // last token (exclusive)
  const float* q = nullptr;  // [group, head_dim]
  int32_t group = 1;
  float scale = 1.0f;        // usually 1 / sqrt(head_dim)
  float* o = nullptr;        // [group, head_dim] out
  float* lse = nullptr;      // [group] out
  // bf16 KV pools (bits, same layout) instead of k_pool / v_pool when set.
  const uint16_t* k_pool_bf16 = nullptr;
  const uint16_t* v_pool_bf16 = nullptr;
};

void PagedPartialAttentionRef(const PagedAttentionParams& p);

// Merges n partial results of the same `rows` query heads:
//   M = max_j lse_j, out = Σ_j e^{lse_j − M} o_j / Σ_j e^{lse_j − M}, out_lse = M + ln Σ_j e^{lse_j − M}.
// o_parts: [n, rows, head_dim], lse_parts: [n, rows]; out: [rows, head_dim], out_lse: [rows]
// (may be null). All-empty input gives out = 0, out_lse = −inf.
void MergeAttentionRef(int32_t n, const float* o_parts, const float* lse_parts, int32_t rows,
                       int32_t head_dim, float* out, float* out_lse);
// The merged lse alone: M + ln Σ_j e^{lse_j − M} over lse[j * stride], j < n (−inf if all are).
float MergeLse(int32_t n, const float* lse, int64_t stride);

}  // namespace kvasir

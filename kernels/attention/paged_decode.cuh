// Batched paged decode attention over head-granular page tables (CUDA).
//
// One launch covers num_items work items; an item is one (sequence, layer, kv_head) with the
// `group` query heads that share that kv head (GQA). Item i attends over the token range
// [begin[i], end[i]) of its own page table and writes, per query head, the normalized partial
// output o = Σ softmax(s) V and its log-sum-exp lse, exactly like PagedPartialAttentionRef
// (paged_attention_ref.h): an empty range gives o = 0 and lse = −inf.
//
// Page tables: the blocks of item i start at block_ids[block_table_offsets[i]], in token order
// from token 0, so token t of item i lives in block block_ids[block_table_offsets[i] +
// t / block_size], slot t % block_size. Only offsets[i] (the start) is read, so the tables may
// be a CSR or any per-item starts (shared or out of order); any block_size >= 1.
//
// Split-KV: with num_splits > 1 the range of each item is cut into chunks of kv_chunk_size
// tokens (the last split takes whatever remains); each (item, split) writes a partial (o, lse)
// into the workspace and InvokeMergeAttention combines them (launched as a programmatic
// dependent, so its launch overlaps the decode kernel's tail). PlanPagedDecode picks the split on
// the host from the longest range; planning and launching are separate so a fixed plan can be
// captured in a CUDA graph.
//
// Supported: head_dim 8, 32, 64, 128, 256; any group >= 1 (groups over 8 re-read K/V once per 8
// heads); KV in fp32 or bf16; q, o, lse and the workspace in fp32; fp32 accumulation.
// k_pool, v_pool, q and the workspace must be 16-byte aligned, q_stride a multiple of 4.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace kvasir::cuda {

template <typename KvT>
struct PagedDecodeParams {
  const KvT* k_pool = nullptr;                   // [num_blocks, block_size, head_dim]
  const KvT* v_pool = nullptr;                   // [num_blocks, block_size, head_dim]
  const int32_t* block_table_offsets = nullptr;  // [num_items] table starts in block_ids
  const int32_t* block_ids = nullptr;            // the blocks of every table
  const int32_t* begin = nullptr;                // [num_items] first token (inclusive)
  const int32_t* end = nullptr;                  // [num_items] last token (exclusive)
  const float* q = nullptr;  // [num_items, group, head_dim], item i at q + i * q_stride
  int64_t q_stride = 0;      // elements between items; 0 means group * head_dim
  float* o = nullptr;        // [num_items, group, head_dim] out, item i at o + i * o_stride
  int64_t o_stride = 0;      // elements between items; 0 means group * head_dim
  float* lse = nullptr;      // [num_items, group] out (natural log)
  int32_t num_items = 0;
  int32_t block_size = 16;
  int32_t head_dim = 128;
  int32_t group = 1;
  float scale = 1.0f;  // usually 1 / sqrt(head_dim)
  // Split-KV (see PlanPagedDecode); workspace only read when num_splits > 1.
  int32_t num_splits = 1;
  int32_t kv_chunk_size = 0;       // tokens per split
  float* workspace_o = nullptr;    // [num_items, num_splits, group, head_dim]
  float* workspace_lse = nullptr;  // [num_items, num_splits, group]
};

struct PagedDecodePlan {
  int32_t num_splits = 1;
  int32_t kv_chunk_size = 0;
  int64_t workspace_o_elems = 0;    // floats for workspace_o
  int64_t workspace_lse_elems = 0;  // floats for workspace_lse
};

// Splits long ranges when the grid is under one wave (4 CTAs per SM for group <= 4, else 2), to
// the most splits that still fit one wave (chunks >= 64 tokens; ranges <= 128 never split):
// num_sms from cudaDeviceProp; max_kv_len is the longest end − begin (a stale, too small value
// stays correct: the last split takes the rest, it only loses parallelism).
PagedDecodePlan PlanPagedDecode(int32_t num_items, int32_t group, int32_t head_dim,
                                int32_t max_kv_len, int32_t num_sms);

// Returns cudaErrorInvalidValue for unsupported shapes or misaligned pointers, else the launch
// status. Instantiated for KvT = float and __nv_bfloat16.
template <typename KvT>
cudaError_t InvokePagedDecode(const PagedDecodeParams<KvT>& p, cudaStream_t stream);

}  // namespace kvasir::cuda

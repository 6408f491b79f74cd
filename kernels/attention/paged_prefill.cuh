// Chunked-prefill attention over head-granular paged KV (CUDA).
//
// In a step, sequence s contributes a chunk of n_s = row_start[s + 1] − row_start[s] query rows
// at positions pos0[s] .. pos0[s] + n_s − 1, whose K/V the KV-append kernel has already written
// into the pools. Row j of the chunk attends causally over tokens [0, pos0[s] + j + 1) of its
// sequence's page table, for each of the num_kv_heads × group query heads, and gets the
// normalized output o = Σ softmax(s) V and its log-sum-exp lse, exactly like
// PagedPartialAttentionRef (paged_attention_ref.h) over the range [0, pos0 + j + 1) of the
// (sequence, kv head) table. A 1-row chunk is a decode row.
//
// Unlike one decode item per row, each K/V tile is read once into shared memory for a tile of
// query rows × the kv head's query heads (flash-attention style, online softmax, fp32 math on
// CUDA cores). Grid = (row tile, kv head × head chunk, sequence); see paged_prefill.cu.
//
// Page tables: the table of (sequence s, kv head h) starts at
// block_ids + block_table_offsets[s * num_kv_heads + h]; token t lives in block table[t /
// block_size], slot t % block_size. Only start offsets are read, so tables may lie anywhere in
// block_ids, in any order.
//
// Supported: head_dim 8, 32, 64, 128, 256; any group >= 1; block_size >= 1; KV in fp32 or bf16;
// q, o, lse in fp32. k_pool, v_pool, q and o must be 16-byte aligned and the row strides
// multiples of 4; num_seqs <= 65535 and num_kv_heads × ⌈group / 32⌉ <= 65535.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace kvasir::cuda {

template <typename KvT>
struct PagedPrefillParams {
  const KvT* k_pool = nullptr;  // [num_blocks, block_size, head_dim]
  const KvT* v_pool = nullptr;  // [num_blocks, block_size, head_dim]
  // [num_seqs * num_kv_heads] start of the table of (sequence s, kv head h) in block_ids.
  const int32_t* block_table_offsets = nullptr;
  const int32_t* block_ids = nullptr;  // [⌈(pos0 + n) / block_size⌉] per table, anywhere
  const int32_t* row_start = nullptr;  // [num_seqs + 1] CSR: rows of sequence s in the step
  const int32_t* pos0 = nullptr;       // [num_seqs] position of the sequence's first row
  // Optional [num_seqs]: rows of sequence s see only tokens [0, min(pos + 1, kv_limit[s])) of
  // its table (the part of a longer history held here; the hybrid executor merges the rest by
  // lse); a row that sees nothing gets o = 0, lse = -inf. Null: plain causal.
  const int32_t* kv_limit = nullptr;
  // [total_rows, num_kv_heads * group, head_dim]: row r, query head hq (kv head hq / group) at
  // q + r * q_row_stride + hq * head_dim.
  const float* q = nullptr;
  int64_t q_row_stride = 0;  // elements between rows; 0 means num_kv_heads * group * head_dim
  float* o = nullptr;        // same layout as q with o_row_stride: normalized output
  int64_t o_row_stride = 0;  // elements between rows; 0 means num_kv_heads * group * head_dim
  float* lse = nullptr;      // optional [total_rows, num_kv_heads * group] natural-log LSE
  int32_t num_seqs = 0;
  int32_t num_kv_heads = 0;
  int32_t group = 1;  // query heads per kv head (GQA)
  int32_t head_dim = 128;
  int32_t block_size = 16;
  // Longest chunk, a host-side value that sizes the grid: rows beyond it are not computed.
  int32_t max_rows = 0;
  float scale = 1.0f;  // usually 1 / sqrt(head_dim)
};

// Returns cudaErrorInvalidValue for unsupported shapes, null or misaligned pointers, else the
// launch status. num_seqs == 0 or max_rows == 0 launches nothing. Instantiated for
// KvT = float and __nv_bfloat16.
template <typename KvT>
cudaError_t InvokePagedPrefill(const PagedPrefillParams<KvT>& p, cudaStream_t stream);

}  // namespace kvasir::cuda

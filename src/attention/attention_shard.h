// The attention worker's core: a paged KV pool holding segments of sequences, and batched
// partial attention over them (DESIGN.md, DistAttention). Thread-safe; transports (in-process
// link, gRPC service) call it directly.
//
// A segment is a token range [base, base + capacity) of one sequence, allocated up front (the
// KV directory decides which worker holds which range). Per layer and step the decoder sends,
// for each sequence this worker holds a segment of, the step's query rows and — for the rows
// whose positions fall in this segment — the new K/V rows to append. The shard appends, then
// returns for each query row and head the partial attention (o normalized by its own softmax
// sum, lse) over the tokens it holds up to the row's position (causal). Rows with no visible
// token here get o = 0, lse = -inf, so the decoder's merge is exact for any split.
#pragma once

#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/status.h"
#include "kvcache/kv_cache.h"
#include "attention/local_attention.h"
#include "runtime/backend.h"

namespace kvasir {

struct ShardItem {
  int64_t segment_key = 0;
  int32_t q_start = 0;       // position of the first query row
  int32_t num_queries = 0;   // rows
  const float* q = nullptr;  // [num_queries, num_heads * head_dim], row stride q_stride
  int64_t q_stride = 0;
  int32_t num_append = 0;    // new K/V rows for the segment's tail (positions base + length..)
  const float* k = nullptr;  // [num_append, kv_dim], row stride kv_stride
  const float* v = nullptr;  // [num_append, kv_dim]
  int64_t kv_stride = 0;
};

struct ShardInfo {
  AttentionShape shape;
  int32_t block_size = 0;
  int64_t num_blocks = 0;
  int64_t free_blocks = 0;
  int64_t num_segments = 0;
  KvDType dtype = KvDType::kF32;
};

class AttentionShard {
 public:
  // Owns a KV pool of num_blocks blocks (each [block_size, head_dim] of one layer and kv head),
  // its rows stored as `dtype` (bf16 halves the memory; the new K/V are rounded on append).
  AttentionShard(AttentionShape shape, int32_t block_size, int64_t num_blocks, Backend* backend,
                 KvDType dtype = KvDType::kF32);

  // Reserves room for `capacity` tokens of the sequence starting at position `base`.
  // AlreadyExists for a known key, ResourceExhausted when the pool cannot hold it.
  absl::Status AllocateSegment(int64_t key, int32_t base, int32_t capacity);
  // Grows a segment to `capacity` tokens. NotFound for an unknown key, ResourceExhausted when
  // the pool cannot hold it (nothing changes then).
  absl::Status ExtendSegment(int64_t key, int32_t capacity);
  // Frees the segment's blocks; unknown keys are ignored (freeing twice is harmless).
  void FreeSegment(int64_t key);

  // Appends then attends for one layer. o: [sum num_queries, num_heads, head_dim],
  // lse: [sum num_queries, num_heads], items' rows in order. All items are checked before
  // anything is appended; a bad item is InvalidArgument and changes nothing.
  absl::Status Step(int32_t layer, std::span<const ShardItem> items, float* o, float* lse);

  ShardInfo Info() const;
  const AttentionShape& shape() const { return shape_; }

 private:
  struct Segment {
    int32_t base = 0;
    int32_t capacity = 0;
  };

  const AttentionShape shape_;
  Backend* backend_;
  mutable absl::Mutex mu_;
  KvCache cache_ ABSL_GUARDED_BY(mu_);
  std::unordered_map<int64_t, Segment> segments_ ABSL_GUARDED_BY(mu_);
  std::vector<PagedAttentionParams> params_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvasir

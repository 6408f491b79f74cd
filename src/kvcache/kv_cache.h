// Head-granular paged KV cache of one worker: a block pool plus, per sequence, one page table
// per (layer, kv_head), each with its own length.
//
// Life of a step: Reserve(seq, n) makes room for n more tokens in every table of the sequence
// (all or nothing); Append() writes the new K/V rows of one (layer, kv_head); attention reads
// through table(); Free() returns every block of the sequence to the pool.
#pragma once

#include <cstdint>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "kvcache/block_pool.h"

namespace kvasir {

struct PageTable {
  std::vector<int32_t> blocks;  // [ceil(capacity / block_size)] block ids, in token order
  int32_t length = 0;           // tokens stored
};

struct KvCacheConfig {
  int32_t num_layers = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
  int32_t block_size = 16;
  int32_t num_blocks = 0;
  // false: bookkeeping only (page tables, free list); the rows live in a pool elsewhere (the
  // CUDA runner's device pool) and are recorded with Advance() instead of Append().
  bool host_storage = true;
  KvDType dtype = KvDType::kF32;  // how host rows are stored (Append rounds fp32 rows to it)
};

class KvCache {
 public:
  explicit KvCache(const KvCacheConfig& config);

  const KvCacheConfig& config() const { return config_; }
  BlockPool& pool() { return pool_; }
  const BlockPool& pool() const { return pool_; }

  bool Contains(int64_t seq_id) const { return seqs_.count(seq_id) > 0; }
  absl::Status Create(int64_t seq_id);
  // Frees all blocks of the sequence; unknown ids are ignored.
  void Free(int64_t seq_id);
  size_t num_sequences() const { return seqs_.size(); }
  // A number unique to this life of the sequence (each Create gets a new one); 0 when unknown.
  // Lets a mirror of the page tables (the CUDA runner's device copy) notice a Free + Create.
  uint64_t Generation(int64_t seq_id) const;

  // Ensures every (layer, kv_head) table of seq can take `n` more tokens. On failure nothing is
  // allocated and ResourceExhausted names how many blocks were missing.
  absl::Status Reserve(int64_t seq_id, int32_t n);
  // Blocks Reserve(seq_id, n) would take now.
  int64_t BlocksNeeded(int64_t seq_id, int32_t n) const;

  // Appends n rows to table (layer, kv_head): k, v are [n, head_dim] with row stride `stride`.
  // Requires a prior Reserve covering them.
  void Append(int64_t seq_id, int32_t layer, int32_t kv_head, const float* k, const float* v,
              int32_t n, int64_t stride);

  // Records n rows written to the reserved slots of every table of seq by someone else (a
  // device pool); requires a prior Reserve covering them.
  void Advance(int64_t seq_id, int32_t n);

  const PageTable& table(int64_t seq_id, int32_t layer, int32_t kv_head) const;
  // Tokens in the shortest table (all are equal unless heads were compacted).
  int32_t Length(int64_t seq_id) const;
  // Tokens over all the sequence's tables (below tables x Length once heads were compacted).
  int64_t TotalTokens(int64_t seq_id) const;

  // Keeps only the listed token indices (ascending) of one table, compacting in place and
  // returning blocks no longer needed to the pool (head-aware eviction). Needs host storage.
  absl::Status Retain(int64_t seq_id, int32_t layer, int32_t kv_head,
                      const std::vector<int32_t>& keep);

 private:
  std::vector<PageTable>& Tables(int64_t seq_id);
  const std::vector<PageTable>& Tables(int64_t seq_id) const;

  KvCacheConfig config_;
  BlockPool pool_;
  // seq_id -> tables [num_layers * num_kv_heads], index layer * num_kv_heads + kv_head
  std::unordered_map<int64_t, std::vector<PageTable>> seqs_;
  std::unordered_map<int64_t, uint64_t> generation_;
  uint64_t last_generation_ = 0;
};

}  // namespace kvasir

// Head-granular paged KV cache of one worker: a block pool plus, per sequence, one page table
// per (layer, kv_head), each with its own length.
//
// Life of a step: Reserve(seq, n) makes room for n more tokens in every table of the sequence
// (all or nothing); Append() writes the new K/V rows of one (layer, kv_head); attention reads
// through table(); Free() returns every block of the sequence to the pool.
//
// Prefix caching (config.prefix_caching): a sequence's full blocks are offered to a cache keyed
// by their tokens and every token before them (RegisterPrefix); a new sequence whose token
// stream starts the same way shares those blocks instead of computing them (AdoptPrefix). One
// cache entry is one block index of the sequence: its L x KVH blocks, one per page table, held
// together. Shared blocks are full, so nobody writes into them; an entry no sequence uses stays
// cached (its blocks count as free) until Reserve needs the room, least recently used first.
// An entry's children (the blocks after it) go with it. Sequences compacted by Retain are
// neither cached nor may Retain touch shared blocks.
#pragma once

#include <cstdint>
#include <set>
#include <span>
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
  bool prefix_caching = false;    // share full blocks of equal token prefixes (above)
};

struct PrefixCacheStats {
  int64_t queries_tokens = 0;  // tokens of the streams looked up (admitted sequences)
  int64_t hit_tokens = 0;      // of those, tokens whose KV was found
  int64_t cached_blocks = 0;   // blocks held by cache entries (in use or not)
  int64_t idle_blocks = 0;     // of those, in entries no sequence uses (reclaimable)
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
  // FailedPrecondition for a sequence sharing cached blocks.
  absl::Status Retain(int64_t seq_id, int32_t layer, int32_t kv_head,
                      const std::vector<int32_t>& keep);

  // ---- Prefix caching (no-ops without config.prefix_caching).
  // For a sequence not held yet: creates it holding the cached KV of the longest run of full
  // blocks `tokens` starts with, leaving at least the last token to compute. Returns the tokens
  // adopted (every table's length). Counted in the stats once the sequence first reserves.
  int32_t AdoptPrefix(int64_t seq_id, std::span<const int32_t> tokens);
  // Offers the sequence's full blocks computed since the last call to the cache; `tokens` is
  // its token stream (at least Length(seq_id) of it).
  void RegisterPrefix(int64_t seq_id, std::span<const int32_t> tokens);
  // Free blocks, with the idle cached ones Reserve may reclaim.
  int64_t NumFreeBlocks() const { return pool_.num_free() + idle_blocks_; }
  PrefixCacheStats prefix_stats() const;

 private:
  std::vector<PageTable>& Tables(int64_t seq_id);
  const std::vector<PageTable>& Tables(int64_t seq_id) const;

  // One cached block index: the blocks of every table, and what it follows.
  struct PrefixEntry {
    uint64_t parent = 0;          // entry of the previous block index; 0: the stream's start
    std::vector<int32_t> tokens;  // [block_size]
    std::vector<int32_t> blocks;  // [num_layers * num_kv_heads]
    std::vector<uint64_t> children;
    int32_t users = 0;            // sequences holding it
    uint64_t last_use = 0;
    bool indexed = true;          // false once an ancestor was reclaimed (unreachable)
  };
  struct PrefixSeq {
    std::vector<uint64_t> entry_of_block;  // per block index: its entry, 0 for private blocks
    uint64_t chain = 0;     // entry matching the stream's blocks examined so far
    bool broken = false;    // the chain left the cache: register nothing more
    bool compacted = false; // Retain ran: never cached
    int64_t pending_queries = 0, pending_hits = 0;  // counted at the first Reserve
  };
  static uint64_t PrefixKey(uint64_t parent, std::span<const int32_t> tokens);
  uint64_t FindEntry(uint64_t parent, std::span<const int32_t> tokens) const;
  void UseEntry(uint64_t id);
  void UnuseEntry(uint64_t id);
  // Reclaims idle entries, least recently used first, until `blocks` are free (or none is left).
  void ReclaimFor(int64_t blocks);
  // Drops an entry from the index with its descendants; idle ones give their blocks back.
  void DropEntry(uint64_t id);
  // Returns an entry's blocks to the pool and forgets it.
  void EraseEntry(uint64_t id);

  KvCacheConfig config_;
  BlockPool pool_;
  // seq_id -> tables [num_layers * num_kv_heads], index layer * num_kv_heads + kv_head
  std::unordered_map<int64_t, std::vector<PageTable>> seqs_;
  std::unordered_map<int64_t, uint64_t> generation_;
  uint64_t last_generation_ = 0;

  std::unordered_map<uint64_t, PrefixEntry> entries_;
  std::unordered_multimap<uint64_t, uint64_t> index_;  // PrefixKey -> entry id
  std::set<std::pair<uint64_t, uint64_t>> idle_;  // (last_use, id) of entries nobody uses
  std::unordered_map<int64_t, PrefixSeq> prefix_seqs_;
  uint64_t next_entry_ = 1, clock_ = 0;
  int64_t idle_blocks_ = 0, cached_blocks_ = 0;
  int64_t queries_tokens_ = 0, hit_tokens_ = 0;
};

}  // namespace kvasir

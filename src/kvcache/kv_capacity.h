// Where a sequence's KV lives, seen by the engine's scheduler: room for tokens, in blocks.
// The local attention, the CUDA runner's device pool and the distributed attention over
// attention workers each implement it; CacheCapacity is the one over a KvCache of this process.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "common/status.h"
#include "kvcache/kv_cache.h"

namespace kvasir {

struct KvUsage {
  int64_t blocks_total = 0;
  int64_t blocks_used = 0;  // reserved or holding tokens
  int64_t evicted_blocks_total = 0;  // returned to the pool by KV eviction (kv_policy), ever
  // Prefix caching, ever: tokens of admitted streams looked up, and those found cached.
  int64_t prefix_queries_tokens = 0;
  int64_t prefix_hit_tokens = 0;
};

class KvCapacity {
 public:
  virtual ~KvCapacity() = default;

  // Makes room for `n` more tokens of the sequence (a new one starts empty), all or nothing.
  // ResourceExhausted: no room now.
  virtual absl::Status Grow(int64_t seq_id, int32_t n) = 0;
  // Blocks Grow(seq_id, n) would take now.
  virtual int64_t BlocksNeeded(int64_t seq_id, int32_t n) const = 0;
  // Blocks a sequence of `tokens` tokens takes from empty.
  virtual int64_t BlocksForTokens(int64_t tokens) const = 0;
  // Frees everything the sequence holds; unknown ids are ignored.
  virtual void Release(int64_t seq_id) = 0;
  virtual bool Contains(int64_t seq_id) const = 0;
  // InvalidArgument when a sequence of `tokens` tokens could never be held.
  virtual absl::Status CheckFits(int64_t tokens) const = 0;
  // Blocks over the whole pool (free = total - used); shared pools report the last known value.
  virtual KvUsage Usage() const = 0;
  // Whether AttentionStepSeq::kv_policy is honoured (the KV is evicted as the policy says).
  virtual bool SupportsKvPolicies() const { return false; }
  // Tokens the sequence's KV holds per (layer, KV head) table, averaged (rounded down); -1 when
  // unknown. Below its length once a kv_policy evicted some.
  virtual int64_t KvTokensHeld(int64_t seq_id) const { return -1; }

  // Prefix caching: for a sequence not held yet, shares the cached KV of the longest run of
  // full blocks its token stream `tokens` starts with and returns the tokens adopted (stored
  // already: its first step starts after them); 0 when nothing is cached or the pool does not
  // cache prefixes.
  virtual int32_t AdoptPrefix(int64_t seq_id, std::span<const int32_t> tokens) { return 0; }
  // Offers the sequence's computed full blocks to the prefix cache (after a step).
  virtual void RegisterPrefix(int64_t seq_id, std::span<const int32_t> tokens) {}

  // For a pool shared with other decoders: the priority of a sequence (its request's arrival
  // order at the router, smaller is older), which the pool's manager uses to decide who grows
  // first. Without one, the sequence id is its priority.
  using PriorityFn = std::function<int64_t(int64_t seq_id)>;
  // True for a pool under a KV manager that must hear of every need (sched::KvBudget::shared).
  virtual bool shared() const { return false; }
  virtual void SetPriorityFn(PriorityFn fn) {}
  // Sequences the shared pool's manager asks this decoder to preempt (recompute later) so that
  // an older request elsewhere can grow. Polled by the engine between steps.
  virtual std::vector<int64_t> TakePreemptions() { return {}; }
};

// KvCapacity over a KvCache of this process: a sequence takes one page table per (layer,
// kv_head), all of the same length.
class CacheCapacity : public KvCapacity {
 public:
  explicit CacheCapacity(KvCache* cache) : cache_(cache) {}
  absl::Status Grow(int64_t seq_id, int32_t n) override;
  int64_t BlocksNeeded(int64_t seq_id, int32_t n) const override;
  int64_t BlocksForTokens(int64_t tokens) const override;
  void Release(int64_t seq_id) override { cache_->Free(seq_id); }
  bool Contains(int64_t seq_id) const override { return cache_->Contains(seq_id); }
  absl::Status CheckFits(int64_t tokens) const override;
  KvUsage Usage() const override;
  int32_t AdoptPrefix(int64_t seq_id, std::span<const int32_t> tokens) override {
    return cache_->AdoptPrefix(seq_id, tokens);
  }
  void RegisterPrefix(int64_t seq_id, std::span<const int32_t> tokens) override {
    cache_->RegisterPrefix(seq_id, tokens);
  }

 private:
  KvCache* cache_;
};

}  // namespace kvasir

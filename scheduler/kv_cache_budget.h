// KvBudget over the worker's real paged cache (kvasir::KvCache). One scheduler sequence is one
// KvCache sequence with the same id; a block of the budget is one head-granular pool block, so a
// token block of a sequence costs num_layers * num_kv_heads pool blocks.
//
// Allocate() creates the sequence on first use and Reserve()s room. Reserve is relative to the
// stored length, which ModelRunner::Forward advances when it appends the step's K/V, and it is
// idempotent until then, so Forward's own Reserve of the same tokens takes no further block.
#pragma once

#include "kvcache/kv_cache.h"
#include "scheduler/kv_budget.h"

namespace kvasir::sched {

class KvCacheBudget : public KvBudget {
 public:
  explicit KvCacheBudget(KvCache* cache) : cache_(cache) {}

  int64_t BlocksNeeded(int64_t seq_id, int32_t num_tokens) const override;
  int64_t BlocksForTokens(int64_t num_tokens) const override;
  int64_t NumFreeBlocks() const override { return cache_->pool().num_free(); }
  int64_t NumTotalBlocks() const override { return cache_->pool().num_blocks(); }
  absl::Status Allocate(int64_t seq_id, int32_t num_tokens) override;
  void Free(int64_t seq_id) override { cache_->Free(seq_id); }

 private:
  KvCache* cache_;
};

}  // namespace kvasir::sched

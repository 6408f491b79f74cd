#include "scheduler/kv_cache_budget.h"

namespace kvasir::sched {

int64_t KvCacheBudget::BlocksForTokens(int64_t num_tokens) const {
  const KvCacheConfig& c = cache_->config();
  const int64_t token_blocks = (num_tokens + c.block_size - 1) / c.block_size;
  return token_blocks * c.num_layers * c.num_kv_heads;
}

int64_t KvCacheBudget::BlocksNeeded(int64_t seq_id, int32_t num_tokens) const {
  if (!cache_->Contains(seq_id)) return BlocksForTokens(num_tokens);
  return cache_->BlocksNeeded(seq_id, num_tokens);
}

absl::Status KvCacheBudget::Allocate(int64_t seq_id, int32_t num_tokens) {
  const bool created = !cache_->Contains(seq_id);
  if (created) RETURN_IF_ERROR(cache_->Create(seq_id));
  absl::Status st = cache_->Reserve(seq_id, num_tokens);
  if (!st.ok() && created) cache_->Free(seq_id);
  return st;
}

}  // namespace kvasir::sched

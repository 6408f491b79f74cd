#include "kvcache/kv_capacity.h"

namespace kvasir {

int64_t CacheCapacity::BlocksForTokens(int64_t tokens) const {
  const KvCacheConfig& k = cache_->config();
  return static_cast<int64_t>(k.num_layers) * k.num_kv_heads *
         ((tokens + k.block_size - 1) / k.block_size);
}

int64_t CacheCapacity::BlocksNeeded(int64_t seq_id, int32_t n) const {
  return cache_->Contains(seq_id) ? cache_->BlocksNeeded(seq_id, n) : BlocksForTokens(n);
}

absl::Status CacheCapacity::CheckFits(int64_t tokens) const {
  if (BlocksForTokens(tokens) > cache_->pool().num_blocks()) {
    return absl::InvalidArgumentError(absl::StrCat(
        tokens, " tokens need more KV memory than this worker has (", cache_->pool().num_blocks(),
        " blocks of ", cache_->config().block_size, " tokens per layer and KV head)"));
  }
  return absl::OkStatus();
}

absl::Status CacheCapacity::Grow(int64_t seq_id, int32_t n) {
  const bool created = !cache_->Contains(seq_id);
  if (created) RETURN_IF_ERROR(cache_->Create(seq_id));
  absl::Status st = cache_->Reserve(seq_id, n);
  if (!st.ok() && created) cache_->Free(seq_id);
  return st;
}

KvUsage CacheCapacity::Usage() const {
  KvUsage u;
  u.blocks_total = cache_->pool().num_blocks();
  u.blocks_used = u.blocks_total - cache_->NumFreeBlocks();
  const PrefixCacheStats p = cache_->prefix_stats();
  u.prefix_queries_tokens = p.queries_tokens;
  u.prefix_hit_tokens = p.hit_tokens;
  return u;
}

}  // namespace kvasir

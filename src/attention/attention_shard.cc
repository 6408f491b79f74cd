#include "attention/attention_shard.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace kvasir {

AttentionShard::AttentionShard(AttentionShape shape, int32_t block_size, int64_t num_blocks,
                               Backend* backend, KvDType dtype)
    : shape_(shape),
      backend_(backend),
      cache_(KvCacheConfig{shape.num_layers, shape.num_kv_heads, shape.head_dim, block_size,
                           static_cast<int32_t>(num_blocks), /*host_storage=*/true, dtype}) {}

absl::Status AttentionShard::AllocateSegment(int64_t key, int32_t base, int32_t capacity) {
  if (base < 0 || capacity <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("segment ", key, ": bad range base ", base, " capacity ", capacity));
  }
  absl::MutexLock lock(&mu_);
  if (segments_.count(key)) {
    return absl::AlreadyExistsError(absl::StrCat("segment ", key, " exists"));
  }
  RETURN_IF_ERROR(cache_.Create(key));
  if (absl::Status s = cache_.Reserve(key, capacity); !s.ok()) {
    cache_.Free(key);
    return s;
  }
  segments_[key] = {base, capacity};
  return absl::OkStatus();
}

absl::Status AttentionShard::ExtendSegment(int64_t key, int32_t capacity) {
  absl::MutexLock lock(&mu_);
  auto it = segments_.find(key);
  if (it == segments_.end()) {
    return absl::NotFoundError(absl::StrCat("segment ", key, " is not held here"));
  }
  if (capacity < it->second.capacity) {
    return absl::InvalidArgumentError(absl::StrCat("segment ", key, " holds ",
                                                   it->second.capacity, " tokens; cannot shrink to ",
                                                   capacity));
  }
  RETURN_IF_ERROR(cache_.Reserve(key, capacity - cache_.Length(key)));
  it->second.capacity = capacity;
  return absl::OkStatus();
}

void AttentionShard::FreeSegment(int64_t key) {
  absl::MutexLock lock(&mu_);
  cache_.Free(key);
  segments_.erase(key);
}

ShardInfo AttentionShard::Info() const {
  absl::MutexLock lock(&mu_);
  ShardInfo i;
  i.shape = shape_;
  i.block_size = cache_.config().block_size;
  i.num_blocks = cache_.pool().num_blocks();
  i.free_blocks = cache_.pool().num_free();
  i.num_segments = static_cast<int64_t>(segments_.size());
  i.dtype = cache_.config().dtype;
  return i;
}

absl::Status AttentionShard::Step(int32_t layer, std::span<const ShardItem> items, float* o,
                                  float* lse) {
  const int32_t KVH = shape_.num_kv_heads, G = shape_.group(), hd = shape_.head_dim;
  const int32_t H = shape_.num_heads;
  if (layer < 0 || layer >= shape_.num_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer ", layer, " outside [0, ", shape_.num_layers, ")"));
  }
  absl::MutexLock lock(&mu_);
  // ---- Check everything first.
  for (size_t i = 0; i < items.size(); ++i) {
    const ShardItem& it = items[i];
    auto seg = segments_.find(it.segment_key);
    if (seg == segments_.end()) {
      return absl::NotFoundError(absl::StrCat("segment ", it.segment_key, " is not held here"));
    }
    if (it.num_queries < 0 || it.num_append < 0 || it.q_start < 0) {
      return absl::InvalidArgumentError(absl::StrCat("segment ", it.segment_key,
                                                     ": negative counts or position"));
    }
    for (size_t j = 0; j < i; ++j) {
      if (items[j].segment_key == it.segment_key) {
        return absl::InvalidArgumentError(
            absl::StrCat("segment ", it.segment_key, " appears twice in one step"));
      }
    }
    for (int32_t kh = 0; kh < KVH; ++kh) {
      const int32_t len = cache_.table(it.segment_key, layer, kh).length;
      if (len + it.num_append > seg->second.capacity) {
        return absl::InvalidArgumentError(absl::StrCat(
            "segment ", it.segment_key, " (layer ", layer, ", kv head ", kh, ") holds ", len,
            " of ", seg->second.capacity, " tokens; cannot append ", it.num_append));
      }
    }
  }
  // ---- Append, then one partial attention per (row, kv head).
  params_.clear();
  const BlockPool& pool = cache_.pool();
  int64_t row = 0;
  for (const ShardItem& it : items) {
    const int32_t base = segments_[it.segment_key].base;
    for (int32_t kh = 0; kh < KVH; ++kh) {
      if (it.num_append > 0) {
        cache_.Append(it.segment_key, layer, kh, it.k + static_cast<int64_t>(kh) * hd,
                      it.v + static_cast<int64_t>(kh) * hd, it.num_append, it.kv_stride);
      }
    }
    for (int32_t i = 0; i < it.num_queries; ++i, ++row) {
      const int64_t pos = static_cast<int64_t>(it.q_start) + i;
      for (int32_t kh = 0; kh < KVH; ++kh) {
        const PageTable& table = cache_.table(it.segment_key, layer, kh);
        params_.push_back(TableAttention(
            pool, table, hd, 0,
            static_cast<int32_t>(std::clamp<int64_t>(pos + 1 - base, 0, table.length)),
            it.q + i * it.q_stride + static_cast<int64_t>(kh) * G * hd, G,
            o + (row * H + static_cast<int64_t>(kh) * G) * hd,
            lse + row * H + static_cast<int64_t>(kh) * G));
      }
    }
  }
  backend_->PagedPartialAttention(params_.data(), static_cast<int64_t>(params_.size()));
  return absl::OkStatus();
}

}  // namespace kvasir

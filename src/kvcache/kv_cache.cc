#include "kvcache/kv_cache.h"

#include <algorithm>

#include "common/logging.h"

namespace kvasir {

KvCache::KvCache(const KvCacheConfig& c)
    : config_(c), pool_(c.num_blocks, c.block_size, c.head_dim, c.host_storage, c.dtype) {}

absl::Status KvCache::Create(int64_t seq_id) {
  if (seqs_.count(seq_id)) {
    return absl::AlreadyExistsError(absl::StrCat("sequence ", seq_id, " already has a KV cache"));
  }
  seqs_.emplace(seq_id, std::vector<PageTable>(config_.num_layers * config_.num_kv_heads));
  generation_[seq_id] = ++last_generation_;
  return absl::OkStatus();
}

void KvCache::Free(int64_t seq_id) {
  auto it = seqs_.find(seq_id);
  if (it == seqs_.end()) return;
  for (PageTable& t : it->second) {
    for (int32_t b : t.blocks) pool_.Free(b);
  }
  seqs_.erase(it);
  generation_.erase(seq_id);
}

uint64_t KvCache::Generation(int64_t seq_id) const {
  auto it = generation_.find(seq_id);
  return it == generation_.end() ? 0 : it->second;
}

std::vector<PageTable>& KvCache::Tables(int64_t seq_id) {
  auto it = seqs_.find(seq_id);
  KVASIR_CHECK(it != seqs_.end());
  return it->second;
}

const std::vector<PageTable>& KvCache::Tables(int64_t seq_id) const {
  auto it = seqs_.find(seq_id);
  KVASIR_CHECK(it != seqs_.end());
  return it->second;
}

int64_t KvCache::BlocksNeeded(int64_t seq_id, int32_t n) const {
  const int32_t bs = config_.block_size;
  int64_t need = 0;
  for (const PageTable& t : Tables(seq_id)) {
    int64_t want = (static_cast<int64_t>(t.length) + n + bs - 1) / bs;
    need += std::max<int64_t>(0, want - static_cast<int64_t>(t.blocks.size()));
  }
  return need;
}

absl::Status KvCache::Reserve(int64_t seq_id, int32_t n) {
  if (!seqs_.count(seq_id)) return absl::NotFoundError(absl::StrCat("unknown sequence ", seq_id));
  int64_t need = BlocksNeeded(seq_id, n);
  if (need > pool_.num_free()) {
    return absl::ResourceExhaustedError(absl::StrCat("KV cache full: sequence ", seq_id, " needs ",
                                                     need, " blocks, ", pool_.num_free(), " free"));
  }
  const int32_t bs = config_.block_size;
  for (PageTable& t : Tables(seq_id)) {
    int64_t want = (static_cast<int64_t>(t.length) + n + bs - 1) / bs;
    while (static_cast<int64_t>(t.blocks.size()) < want) {
      auto b = pool_.Allocate();
      KVASIR_CHECK(b.ok());  // counted above
      t.blocks.push_back(*b);
    }
  }
  return absl::OkStatus();
}

void KvCache::Append(int64_t seq_id, int32_t layer, int32_t kv_head, const float* k,
                     const float* v, int32_t n, int64_t stride) {
  PageTable& t = Tables(seq_id)[layer * config_.num_kv_heads + kv_head];
  const int32_t bs = config_.block_size;
  KVASIR_CHECK(pool_.has_host_storage());
  KVASIR_CHECK(static_cast<int64_t>(t.length) + n <= static_cast<int64_t>(t.blocks.size()) * bs);
  for (int32_t i = 0; i < n; ++i) {
    int32_t pos = t.length + i;
    int32_t block = t.blocks[pos / bs];
    pool_.WriteRow(block, pos % bs, k + i * stride, v + i * stride);
  }
  t.length += n;
}

void KvCache::Advance(int64_t seq_id, int32_t n) {
  const int64_t bs = config_.block_size;
  for (PageTable& t : Tables(seq_id)) {
    KVASIR_CHECK(static_cast<int64_t>(t.length) + n <= static_cast<int64_t>(t.blocks.size()) * bs);
    t.length += n;
  }
}

const PageTable& KvCache::table(int64_t seq_id, int32_t layer, int32_t kv_head) const {
  return Tables(seq_id)[layer * config_.num_kv_heads + kv_head];
}

int32_t KvCache::Length(int64_t seq_id) const {
  const auto& tables = Tables(seq_id);
  int32_t m = tables.empty() ? 0 : tables[0].length;
  for (const PageTable& t : tables) m = std::min(m, t.length);
  return m;
}

int64_t KvCache::TotalTokens(int64_t seq_id) const {
  int64_t total = 0;
  for (const PageTable& t : Tables(seq_id)) total += t.length;
  return total;
}

absl::Status KvCache::Retain(int64_t seq_id, int32_t layer, int32_t kv_head,
                             const std::vector<int32_t>& keep) {
  if (!seqs_.count(seq_id)) return absl::NotFoundError(absl::StrCat("unknown sequence ", seq_id));
  if (!pool_.has_host_storage()) {
    return absl::FailedPreconditionError("Retain: the KV rows are not stored in this cache");
  }
  PageTable& t = Tables(seq_id)[layer * config_.num_kv_heads + kv_head];
  const int32_t bs = config_.block_size;
  for (size_t i = 0; i < keep.size(); ++i) {
    if (keep[i] < 0 || keep[i] >= t.length || (i > 0 && keep[i] <= keep[i - 1])) {
      return absl::InvalidArgumentError("Retain: indices must be ascending and within the table");
    }
  }
  // Moving row keep[i] to slot i is safe in place because keep[i] >= i.
  for (size_t i = 0; i < keep.size(); ++i) {
    int32_t src = keep[i], dst = static_cast<int32_t>(i);
    if (src == dst) continue;
    pool_.CopyRow(t.blocks[dst / bs], dst % bs, t.blocks[src / bs], src % bs);
  }
  t.length = static_cast<int32_t>(keep.size());
  size_t want = (t.length + bs - 1) / bs;
  while (t.blocks.size() > want) {
    pool_.Free(t.blocks.back());
    t.blocks.pop_back();
  }
  return absl::OkStatus();
}

}  // namespace kvasir

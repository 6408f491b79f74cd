#include "kvcache/kv_cache.h"

#include <algorithm>
#include <utility>

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
  auto ps = prefix_seqs_.find(seq_id);
  const std::vector<uint64_t>* shared = ps == prefix_seqs_.end() ? nullptr : &ps->second.entry_of_block;
  for (PageTable& t : it->second) {
    for (size_t i = 0; i < t.blocks.size(); ++i) {
      if (shared && i < shared->size() && (*shared)[i] != 0) continue;  // the entry's
      pool_.Free(t.blocks[i]);
    }
  }
  if (ps != prefix_seqs_.end()) {
    for (uint64_t e : ps->second.entry_of_block) {
      if (e != 0) UnuseEntry(e);
    }
    prefix_seqs_.erase(ps);
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
  if (need > NumFreeBlocks()) {
    return absl::ResourceExhaustedError(absl::StrCat("KV cache full: sequence ", seq_id, " needs ",
                                                     need, " blocks, ", NumFreeBlocks(), " free"));
  }
  if (need > pool_.num_free()) ReclaimFor(need);
  if (auto ps = prefix_seqs_.find(seq_id); ps != prefix_seqs_.end()) {
    queries_tokens_ += std::exchange(ps->second.pending_queries, 0);
    hit_tokens_ += std::exchange(ps->second.pending_hits, 0);
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
  PrefixSeq& ps = prefix_seqs_[seq_id];
  for (uint64_t e : ps.entry_of_block) {
    if (e != 0) {
      return absl::FailedPreconditionError("Retain: the sequence shares cached prefix blocks");
    }
  }
  ps.compacted = true;
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

// ---- Prefix caching.

uint64_t KvCache::PrefixKey(uint64_t parent, std::span<const int32_t> tokens) {
  // A bucket key only: FindEntry compares the parent and the tokens themselves.
  auto mix = [](uint64_t x) {  // splitmix64's finalizer
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
  };
  uint64_t h = mix(parent + 0x9e3779b97f4a7c15ULL);
  for (int32_t t : tokens) h = mix(h ^ static_cast<uint32_t>(t));
  return h;
}

uint64_t KvCache::FindEntry(uint64_t parent, std::span<const int32_t> tokens) const {
  auto [lo, hi] = index_.equal_range(PrefixKey(parent, tokens));
  for (auto it = lo; it != hi; ++it) {
    const PrefixEntry& e = entries_.at(it->second);
    if (e.parent == parent && std::equal(e.tokens.begin(), e.tokens.end(), tokens.begin(),
                                         tokens.end())) {
      return it->second;
    }
  }
  return 0;
}

void KvCache::UseEntry(uint64_t id) {
  PrefixEntry& e = entries_.at(id);
  if (e.users++ == 0) {
    idle_.erase({e.last_use, id});
    idle_blocks_ -= static_cast<int64_t>(e.blocks.size());
  }
  e.last_use = ++clock_;
}

void KvCache::UnuseEntry(uint64_t id) {
  PrefixEntry& e = entries_.at(id);
  KVASIR_CHECK(e.users > 0);
  if (--e.users > 0) return;
  if (e.indexed) {
    idle_.insert({e.last_use, id});
    idle_blocks_ += static_cast<int64_t>(e.blocks.size());
    return;
  }
  // Unreachable (an ancestor was reclaimed): nothing will adopt it again.
  EraseEntry(id);
}

void KvCache::EraseEntry(uint64_t id) {
  PrefixEntry& e = entries_.at(id);
  for (int32_t b : e.blocks) pool_.Free(b);
  cached_blocks_ -= static_cast<int64_t>(e.blocks.size());
  entries_.erase(id);
}

void KvCache::DropEntry(uint64_t id) {
  std::vector<uint64_t> todo = {id};
  while (!todo.empty()) {
    const uint64_t cur = todo.back();
    todo.pop_back();
    auto found = entries_.find(cur);
    if (found == entries_.end() || !found->second.indexed) continue;  // gone or dropped already
    PrefixEntry& e = found->second;
    auto [lo, hi] = index_.equal_range(PrefixKey(e.parent, e.tokens));
    for (auto it = lo; it != hi; ++it) {
      if (it->second == cur) {
        index_.erase(it);
        break;
      }
    }
    e.indexed = false;
    todo.insert(todo.end(), e.children.begin(), e.children.end());
    if (e.users == 0) {
      idle_.erase({e.last_use, cur});
      idle_blocks_ -= static_cast<int64_t>(e.blocks.size());
      EraseEntry(cur);
    }
  }
}

void KvCache::ReclaimFor(int64_t blocks) {
  while (pool_.num_free() < blocks && !idle_.empty()) DropEntry(idle_.begin()->second);
}

int32_t KvCache::AdoptPrefix(int64_t seq_id, std::span<const int32_t> tokens) {
  if (!config_.prefix_caching || seqs_.count(seq_id) || tokens.empty()) return 0;
  const int32_t bs = config_.block_size;
  const size_t max_blocks = (tokens.size() - 1) / bs;  // the last token is always computed
  std::vector<uint64_t> found;
  uint64_t chain = 0;
  for (size_t i = 0; i < max_blocks; ++i) {
    const uint64_t e = FindEntry(chain, tokens.subspan(i * bs, bs));
    if (e == 0) break;
    found.push_back(chain = e);
  }
  KVASIR_CHECK(Create(seq_id).ok());
  PrefixSeq& ps = prefix_seqs_[seq_id];
  ps.pending_queries = static_cast<int64_t>(tokens.size());
  ps.pending_hits = static_cast<int64_t>(found.size()) * bs;
  if (found.empty()) return 0;
  std::vector<PageTable>& tables = Tables(seq_id);
  for (uint64_t id : found) {
    UseEntry(id);
    const PrefixEntry& e = entries_.at(id);
    for (size_t t = 0; t < tables.size(); ++t) tables[t].blocks.push_back(e.blocks[t]);
  }
  for (PageTable& t : tables) t.length = static_cast<int32_t>(found.size()) * bs;
  ps.entry_of_block = found;
  ps.chain = chain;
  return static_cast<int32_t>(found.size()) * bs;
}

void KvCache::RegisterPrefix(int64_t seq_id, std::span<const int32_t> tokens) {
  if (!config_.prefix_caching || !seqs_.count(seq_id)) return;
  PrefixSeq& ps = prefix_seqs_[seq_id];
  if (ps.compacted || ps.broken) return;
  const int32_t bs = config_.block_size;
  const size_t full = std::min<size_t>(Length(seq_id), tokens.size()) / bs;
  std::vector<PageTable>& tables = Tables(seq_id);
  for (size_t i = ps.entry_of_block.size(); i < full; ++i) {
    if (ps.chain != 0) {
      auto p = entries_.find(ps.chain);
      if (p == entries_.end() || !p->second.indexed) {
        ps.broken = true;  // what it follows was reclaimed: nothing after it is reachable
        return;
      }
    }
    std::span<const int32_t> block = tokens.subspan(i * bs, bs);
    if (const uint64_t existing = FindEntry(ps.chain, block); existing != 0) {
      // Computed by another sequence meanwhile: this one's copy stays private.
      ps.entry_of_block.push_back(0);
      ps.chain = existing;
      continue;
    }
    const uint64_t id = next_entry_++;
    PrefixEntry& e = entries_[id];
    e.parent = ps.chain;
    e.tokens.assign(block.begin(), block.end());
    e.blocks.reserve(tables.size());
    for (const PageTable& t : tables) e.blocks.push_back(t.blocks[i]);
    e.users = 1;
    e.last_use = ++clock_;
    cached_blocks_ += static_cast<int64_t>(e.blocks.size());
    index_.emplace(PrefixKey(e.parent, e.tokens), id);
    if (ps.chain != 0) entries_.at(ps.chain).children.push_back(id);
    ps.entry_of_block.push_back(id);
    ps.chain = id;
  }
}

PrefixCacheStats KvCache::prefix_stats() const {
  return {queries_tokens_, hit_tokens_, cached_blocks_, idle_blocks_};
}

}  // namespace kvasir

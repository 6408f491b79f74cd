#include "attention/hybrid_kv.h"

#include <algorithm>

namespace kvasir {

int32_t HybridPlacement::NearShare(int64_t near_len, int32_t n, int64_t room,
                                   int64_t room_above_reserve) const {
  int64_t sink = std::max<int64_t>(o_.sink_tokens, 1);
  if (o_.max_near_tokens > 0) sink = std::min(sink, o_.max_near_tokens);
  const int64_t must = std::clamp<int64_t>(sink - near_len, 0, n);
  if (room < must) return -1;
  const int64_t cap =
      o_.max_near_tokens > 0 ? std::max<int64_t>(o_.max_near_tokens - near_len, 0) : n;
  const int64_t share = std::min({int64_t{n}, std::max(room_above_reserve, must), room,
                                  std::max(cap, must)});
  return static_cast<int32_t>(std::max<int64_t>(share, 0));
}

HybridKv::HybridKv(const KvCache* near_cache, KvCapacity* near, KvCapacity* far,
                   HybridPlacementOptions options)
    : near_cache_(near_cache), near_(near), far_(far), placement_(options) {}

int32_t HybridKv::NearPart(int32_t near_end, int32_t start, int32_t n) {
  return static_cast<int32_t>(std::clamp<int64_t>(int64_t{near_end} - start, 0, n));
}

void HybridKv::NearRoom(int64_t seq_id, int64_t* room, int64_t* above_reserve) const {
  const KvCacheConfig& k = near_cache_->config();
  const int64_t tables = int64_t{k.num_layers} * k.num_kv_heads;
  int64_t slack = 0;
  if (near_cache_->Contains(seq_id)) {
    const PageTable& t = near_cache_->table(seq_id, 0, 0);
    slack = static_cast<int64_t>(t.blocks.size()) * k.block_size - t.length;
  }
  const int64_t free = near_cache_->NumFreeBlocks();
  const int64_t reserve = placement_.options().reserve_blocks;
  *room = slack + free / tables * k.block_size;
  *above_reserve = slack + std::max<int64_t>(free - reserve, 0) / tables * k.block_size;
}

int32_t HybridKv::PlanNear(int64_t seq_id, int32_t n) const {
  auto it = seqs_.find(seq_id);
  const int64_t len = it == seqs_.end() ? 0 : it->second.length;
  int64_t room = 0, above = 0;
  NearRoom(seq_id, &room, &above);
  return placement_.NearShare(len, n, room, above);
}

absl::Status HybridKv::Grow(int64_t seq_id, int32_t n) {
  if (n < 0) return absl::InvalidArgumentError("negative growth");
  auto it = seqs_.find(seq_id);
  if (it != seqs_.end() && it->second.grown_at == it->second.length && n <= it->second.grown_n) {
    return absl::OkStatus();  // room made already
  }
  if (it != seqs_.end() && it->second.near_end != kAllNear) {
    Seq& st = it->second;
    const int32_t near = NearPart(st.near_end, st.length, n);
    if (near > 0) RETURN_IF_ERROR(near_->Grow(seq_id, near));
    RETURN_IF_ERROR(far_->Grow(seq_id, n - near));
    st.grown_at = st.length;
    st.grown_n = n;
    return absl::OkStatus();
  }
  const int32_t near = PlanNear(seq_id, n);
  if (near < 0) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "no room in the near (GPU) KV pool for the first tokens of sequence ", seq_id));
  }
  const bool created = it == seqs_.end();
  if (near > 0 || created) RETURN_IF_ERROR(near_->Grow(seq_id, near));
  if (near < n) {
    if (absl::Status st = far_->Grow(seq_id, n - near); !st.ok()) {
      // The near reservation stays (the sequence's own room); a created one goes away.
      if (created) near_->Release(seq_id);
      return st;
    }
  }
  Seq& st = seqs_[seq_id];
  if (near < n) st.near_end = st.length + near;
  st.grown_at = st.length;
  st.grown_n = n;
  return absl::OkStatus();
}

int64_t HybridKv::BlocksNeeded(int64_t seq_id, int32_t n) const {
  auto it = seqs_.find(seq_id);
  if (it != seqs_.end() && it->second.grown_at == it->second.length && n <= it->second.grown_n) {
    return 0;
  }
  int32_t near = 0;
  if (it != seqs_.end() && it->second.near_end != kAllNear) {
    near = NearPart(it->second.near_end, it->second.length, n);
  } else {
    near = PlanNear(seq_id, n);
    if (near < 0) {  // its sinks do not fit near now: more than there is
      return near_cache_->pool().num_blocks() + far_->Usage().blocks_total + 1;
    }
  }
  int64_t blocks = near > 0 ? near_->BlocksNeeded(seq_id, near) : 0;
  if (near < n) blocks += far_->BlocksNeeded(seq_id, n - near);
  return blocks;
}

void HybridKv::Release(int64_t seq_id) {
  near_->Release(seq_id);
  far_->Release(seq_id);
  seqs_.erase(seq_id);
}

absl::Status HybridKv::CheckFits(int64_t tokens) const {
  const KvCacheConfig& k = near_cache_->config();
  const int64_t tables = int64_t{k.num_layers} * k.num_kv_heads;
  // A sequence alone grows near past its sinks only above the reserve.
  const int64_t usable = std::max(near_cache_->pool().num_blocks() -
                                      placement_.options().reserve_blocks,
                                  tables);
  int64_t near = usable / tables * k.block_size;
  if (placement_.options().max_near_tokens > 0) {
    near = std::min(near, placement_.options().max_near_tokens);
  }
  if (tokens <= near) return near_->CheckFits(tokens);
  if (near < 1) {
    return absl::InvalidArgumentError("the near (GPU) KV pool cannot hold one block per table");
  }
  return far_->CheckFits(tokens - near);
}

KvUsage HybridKv::Usage() const {
  KvUsage u = near_->Usage();
  const KvUsage f = far_->Usage();
  u.blocks_total += f.blocks_total;
  u.blocks_used += f.blocks_used;
  u.evicted_blocks_total += f.evicted_blocks_total;
  return u;
}

int32_t HybridKv::NearEnd(int64_t seq_id) const {
  auto it = seqs_.find(seq_id);
  return it == seqs_.end() ? kAllNear : it->second.near_end;
}

int32_t HybridKv::Length(int64_t seq_id) const {
  auto it = seqs_.find(seq_id);
  return it == seqs_.end() ? 0 : it->second.length;
}

void HybridKv::Advance(int64_t seq_id, int32_t n) {
  auto it = seqs_.find(seq_id);
  if (it != seqs_.end()) it->second.length += n;
}

}  // namespace kvasir

#include "router/kv_manager.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/logging.h"

namespace kvasir {

KvManager::KvManager(int64_t blocks_per_token_block, int32_t block_size, sched::Clock* clock,
                     KvManagerOptions options)
    : clock_(clock), options_(options), directory_(blocks_per_token_block, block_size) {}

KvManager::~KvManager() = default;

void KvManager::AddPool(std::string name, int64_t num_blocks, KvPoolClient* pool) {
  absl::MutexLock lock(&mu_);
  directory_.AddWorker(name, num_blocks);
  pools_.push_back({std::move(name), pool});
}

int32_t KvManager::PoolIndex(const std::string& name) const {
  for (size_t i = 0; i < pools_.size(); ++i) {
    if (pools_[i].name == name) return static_cast<int32_t>(i);
  }
  return -1;
}

void KvManager::DropPool(int32_t pool) {
  if (!directory_.alive(pool)) return;
  std::vector<int64_t> keys = directory_.DropWorker(pool);
  ++stats_.pools_down_total;
  stats_.sequences_lost_total += static_cast<int64_t>(keys.size());
  for (int64_t key : keys) {
    lost_.insert(key);
    orders_[key] = Order{};  // its decoder recomputes it elsewhere
    pending_.erase(key);
  }
  for (auto& [key, p] : pending_) {
    if (p.target == pool) p.target = -1;
  }
  std::vector<int64_t>& dropped = dropped_[pool];
  dropped.insert(dropped.end(), keys.begin(), keys.end());
  SPDLOG_ERROR("attention worker {} is down: {} sequence(s) lost KV there and will be recomputed",
               pools_[pool].name, keys.size());
}

void KvManager::PoolDown(const std::string& name) {
  absl::MutexLock lock(&mu_);
  if (const int32_t w = PoolIndex(name); w >= 0) DropPool(w);
}

std::vector<int64_t> KvManager::TakeDroppedKeys(const std::string& name) {
  absl::MutexLock lock(&mu_);
  const int32_t w = PoolIndex(name);
  if (w < 0) return {};
  return std::exchange(dropped_[w], {});
}

void KvManager::PoolUp(const std::string& name, int64_t num_blocks, int64_t free_blocks) {
  absl::MutexLock lock(&mu_);
  const int32_t w = PoolIndex(name);
  if (w < 0 || directory_.alive(w)) return;
  directory_.ResetWorker(w, num_blocks, free_blocks);
  SPDLOG_WARN("attention worker {} is back: {} of {} blocks free", name,
              directory_.worker_free_blocks(w), num_blocks);
}

bool KvManager::pool_alive(const std::string& name) {
  absl::MutexLock lock(&mu_);
  const int32_t w = PoolIndex(name);
  return w >= 0 && directory_.alive(w);
}

void KvManager::Touch(int64_t key_prefix) {
  if (key_prefix >= 0) contact_[key_prefix] = clock_->Now();
}

std::vector<int64_t> KvManager::ExpiredDecoders(absl::Duration lease) {
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_->Now();
  std::vector<int64_t> out;
  for (const auto& [prefix, at] : contact_) {
    if (now - at > lease) out.push_back(prefix);
  }
  return out;
}

int64_t KvManager::FreeDecoder(int64_t key_prefix) {
  std::vector<int64_t> keys;
  {
    absl::MutexLock lock(&mu_);
    contact_.erase(key_prefix);
    for (const auto& [key, prio] : priority_) {
      if ((key >> kSeqKeyBits) == key_prefix) keys.push_back(key);
    }
    for (auto it = pending_.begin(); it != pending_.end();) {
      it = (it->first >> kSeqKeyBits) == key_prefix ? pending_.erase(it) : std::next(it);
    }
    ++stats_.decoders_expired_total;
    stats_.sequences_reclaimed_total += static_cast<int64_t>(keys.size());
  }
  for (int64_t key : keys) Free(key);
  return static_cast<int64_t>(keys.size());
}

absl::Status KvManager::PoolError(const absl::Status& s) {
  if (absl::IsResourceExhausted(s) || absl::IsUnavailable(s)) return s;
  if (absl::IsDeadlineExceeded(s)) return absl::UnavailableError(s.message());
  return absl::InternalError(s.message());
}

void KvManager::NoteFailure(int32_t pool, const absl::Status& s) {
  if (absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s)) {
    SPDLOG_ERROR("attention worker {} is unreachable: {}", pools_[pool].name,
                 std::string(s.message()));
    DropPool(pool);
  }
}

void KvManager::Expire() {
  const absl::Time now = clock_->Now();
  for (auto it = pending_.begin(); it != pending_.end();) {
    it = it->second.expires < now ? pending_.erase(it) : std::next(it);
  }
  for (auto& [key, order] : orders_) {
    if (order.delivered && now - order.delivered_at >= options_.redeliver_after) {
      order.delivered = false;
    }
  }
}

KvManager::Held KvManager::Reserved(int64_t seq_key, int64_t priority, bool admission) const {
  Held h;
  h.per_pool.assign(pools_.size(), 0);
  for (const auto& [key, p] : pending_) {
    if (key == seq_key) continue;
    if (p.growth) {
      // Growth goes before every admission and before younger growth.
      if ((admission || p.priority < priority) && p.target >= 0) h.per_pool[p.target] += p.blocks;
    } else if (admission && p.priority < priority) {
      h.admissions += p.blocks;
    }
  }
  return h;
}

bool KvManager::Respects(const Held& h) const {
  int64_t free = 0, reserved = h.admissions;
  for (size_t w = 0; w < pools_.size(); ++w) {
    if (!directory_.alive(static_cast<int32_t>(w))) continue;
    const int64_t f = directory_.worker_free_blocks(static_cast<int32_t>(w));
    if (f < h.per_pool[w]) return false;
    free += f;
    reserved += h.per_pool[w];
  }
  return free >= reserved;
}

int64_t KvManager::BlocksOn(int64_t seq_key, int32_t pool) const {
  int64_t b = 0;
  if (const auto* segs = directory_.Find(seq_key)) {
    for (const PlannedSegment& s : *segs) {
      if (s.worker == pool) b += directory_.BlocksFor(s.capacity);
    }
  }
  return b;
}

std::vector<int32_t> KvManager::GrowthPools(int64_t seq_key) const {
  std::vector<int32_t> out;
  const auto* segs = directory_.Find(seq_key);
  if (segs == nullptr || segs->empty()) return out;
  for (int32_t w = 0; w < directory_.num_workers(); ++w) {
    if (!directory_.alive(w)) continue;
    const bool holds = std::any_of(segs->begin(), segs->end(),
                                   [&](const PlannedSegment& s) { return s.worker == w; });
    if (!holds || segs->back().worker == w) out.push_back(w);
  }
  return out;
}

void KvManager::Refuse(int64_t seq_key, const Pending& p) {
  Pending entry = p;
  entry.expires = clock_->Now() + options_.pending_ttl;
  if (entry.growth) {
    // The pool that can give the most: its free blocks plus what younger sequences hold there.
    int64_t best = -1;
    for (int32_t w : GrowthPools(seq_key)) {
      int64_t potential = directory_.worker_free_blocks(w);
      for (const auto& [prio, key] : by_priority_) {
        if (prio > entry.priority && key != seq_key) potential += BlocksOn(key, w);
      }
      // The tail's pool wins ties: growing it needs no new segment.
      if (potential > best) {
        best = potential;
        entry.target = w;
      }
    }
  }
  pending_[seq_key] = entry;
  ++stats_.refusals_total;
}

void KvManager::ChooseVictims() {
  int64_t oldest_key = -1;
  const Pending* oldest = nullptr;
  for (const auto& [key, p] : pending_) {
    if (p.growth && (oldest == nullptr || p.priority < oldest->priority)) {
      oldest = &p;
      oldest_key = key;
    }
  }
  if (oldest == nullptr || oldest->target < 0) return;
  const int32_t w = oldest->target;
  int64_t cover = directory_.worker_free_blocks(w);
  for (const auto& [key, order] : orders_) cover += BlocksOn(key, w);
  for (auto it = by_priority_.rbegin(); it != by_priority_.rend() && cover < oldest->blocks;
       ++it) {
    const auto [prio, key] = *it;
    if (prio <= oldest->priority) break;  // only younger requests give way
    if (key == oldest_key || orders_.count(key)) continue;
    const int64_t b = BlocksOn(key, w);
    if (b == 0) continue;
    orders_[key] = Order{};
    ++stats_.preemptions_ordered_total;
    cover += b;
    SPDLOG_DEBUG("KV manager: sequence {:#x} (priority {}) gives way to {:#x} (priority {})", key,
                 prio, oldest_key, oldest->priority);
  }
}

std::vector<SegmentPlacement> KvManager::Placements(int64_t seq_key) const {
  std::vector<SegmentPlacement> out;
  if (const auto* segs = directory_.Find(seq_key)) {
    for (const PlannedSegment& p : *segs) out.push_back({pools_[p.worker].name, p.base, p.capacity});
  }
  return out;
}

void KvManager::Forget(int64_t seq_key) {
  if (auto it = priority_.find(seq_key); it != priority_.end()) {
    by_priority_.erase({it->second, seq_key});
    priority_.erase(it);
  }
  pending_.erase(seq_key);
  orders_.erase(seq_key);
  lost_.erase(seq_key);
}

absl::StatusOr<std::vector<SegmentPlacement>> KvManager::Allocate(int64_t seq_key, int64_t tokens,
                                                                  int64_t priority) {
  std::vector<SegmentPlacement> plan;
  std::vector<int32_t> pool_of;
  std::vector<KvPoolClient*> clients;
  {
    absl::MutexLock lock(&mu_);
    Expire();
    Touch(seq_key >> kSeqKeyBits);
    if (tokens <= 0) return absl::InvalidArgumentError("a sequence needs at least one token");
    const Pending want{priority, directory_.BlocksFor(tokens), /*growth=*/false, -1, {}};
    const Held held = Reserved(seq_key, priority, /*admission=*/true);
    absl::StatusOr<std::vector<PlannedSegment>> planned = directory_.Allocate(seq_key, tokens);
    if (!planned.ok()) {
      if (absl::IsResourceExhausted(planned.status())) Refuse(seq_key, want);
      return planned.status();
    }
    if (!Respects(held)) {
      directory_.Free(seq_key);
      Refuse(seq_key, want);
      return absl::ResourceExhaustedError(
          "free KV blocks are kept for running requests that must grow, or older ones");
    }
    pending_.erase(seq_key);
    priority_[seq_key] = priority;
    by_priority_.insert({priority, seq_key});
    for (const PlannedSegment& p : *planned) {
      plan.push_back({pools_[p.worker].name, p.base, p.capacity});
      pool_of.push_back(p.worker);
      clients.push_back(pools_[p.worker].client);
    }
  }
  // Unlocked: the pools may be across the network.
  absl::Status st;
  size_t done = 0;
  for (; done < plan.size(); ++done) {
    st = clients[done]->AllocateSegment(seq_key, plan[done].base, plan[done].capacity);
    if (!st.ok()) break;
  }
  if (st.ok()) return plan;
  for (size_t i = 0; i < done; ++i) (void)clients[i]->FreeSegment(seq_key);
  absl::MutexLock lock(&mu_);
  NoteFailure(pool_of[done], st);
  directory_.Free(seq_key);
  Forget(seq_key);
  const std::string what = absl::StrCat("attention worker ", plan[done].worker, ": ", st.message());
  if (!directory_.alive(pool_of[done]) && directory_.MaxTokens() > 0) {
    // That worker is down; the others may take it on the next try.
    return absl::ResourceExhaustedError(what);
  }
  return PoolError(absl::Status(st.code(), what));
}

absl::StatusOr<std::vector<SegmentPlacement>> KvManager::Extend(int64_t seq_key, int64_t tokens,
                                                                int64_t priority) {
  PlannedSegment tail;
  bool grew = false;
  KvPoolClient* client = nullptr;
  std::string pool_name;
  {
    absl::MutexLock lock(&mu_);
    Expire();
    Touch(seq_key >> kSeqKeyBits);
    if (directory_.Find(seq_key) == nullptr) {
      return absl::NotFoundError(absl::StrCat("sequence ", seq_key, " is not placed"));
    }
    if (lost_.count(seq_key)) {
      return absl::AbortedError(absl::StrCat(
          "sequence ", seq_key, " lost KV with a dead attention worker: recompute it"));
    }
    if (tokens <= 0) return absl::InvalidArgumentError("extend by at least one token");
    const Pending want{priority, directory_.BlocksFor(tokens), /*growth=*/true, -1, {}};
    const Held held = Reserved(seq_key, priority, /*admission=*/false);
    absl::StatusOr<PlannedSegment> planned = directory_.Extend(seq_key, tokens, &grew);
    if (planned.ok() && !Respects(held)) {
      directory_.UndoExtend(seq_key, tokens, grew);
      planned = absl::ResourceExhaustedError(
          "free KV blocks there are kept for an older request that must grow");
    }
    if (!planned.ok()) {
      if (absl::IsResourceExhausted(planned.status())) {
        Refuse(seq_key, want);
        ChooseVictims();
      }
      return planned.status();
    }
    pending_.erase(seq_key);
    tail = *planned;
    client = pools_[tail.worker].client;
    pool_name = pools_[tail.worker].name;
  }
  const absl::Status st = grew ? client->ExtendSegment(seq_key, tail.capacity)
                               : client->AllocateSegment(seq_key, tail.base, tail.capacity);
  absl::MutexLock lock(&mu_);
  if (!st.ok()) {
    NoteFailure(tail.worker, st);
    // A pool that went down took the new segment (or the grown tail) with it.
    if (directory_.alive(tail.worker)) directory_.UndoExtend(seq_key, tokens, grew);
    if (lost_.count(seq_key)) {
      return absl::AbortedError(absl::StrCat("sequence ", seq_key, " lost KV with attention worker ",
                                             pool_name, ": recompute it"));
    }
    return PoolError(
        absl::Status(st.code(), absl::StrCat("attention worker ", pool_name, ": ", st.message())));
  }
  return Placements(seq_key);
}

void KvManager::Free(int64_t seq_key) {
  std::vector<std::pair<KvPoolClient*, std::string>> holders;
  {
    absl::MutexLock lock(&mu_);
    Touch(seq_key >> kSeqKeyBits);
    const auto* segs = directory_.Find(seq_key);
    if (segs == nullptr) {
      Forget(seq_key);
      return;
    }
    for (const PlannedSegment& s : *segs) {
      if (!directory_.alive(s.worker)) continue;  // freed when it comes back (TakeDroppedKeys)
      holders.emplace_back(pools_[s.worker].client, pools_[s.worker].name);
    }
  }
  // The blocks count as used until their pools have freed them, so nobody is promised blocks
  // a pool still holds.
  for (auto& [client, name] : holders) {
    absl::Status st = client->FreeSegment(seq_key);
    if (!st.ok()) SPDLOG_WARN("freeing sequence {} on {}: {}", seq_key, name, std::string(st.message()));
  }
  absl::MutexLock lock(&mu_);
  directory_.Free(seq_key);
  Forget(seq_key);
}

std::vector<int64_t> KvManager::TakePreemptions(int64_t key_prefix) {
  absl::MutexLock lock(&mu_);
  Expire();
  Touch(key_prefix);
  std::vector<int64_t> out;
  const absl::Time now = clock_->Now();
  for (auto& [key, order] : orders_) {
    if ((key >> kSeqKeyBits) != key_prefix || order.delivered) continue;
    order.delivered = true;
    order.delivered_at = now;
    out.push_back(key);
  }
  return out;
}

std::pair<int64_t, int32_t> KvManager::BlockShape() {
  absl::MutexLock lock(&mu_);
  return {directory_.blocks_per_token_block(), directory_.block_size()};
}

int64_t KvManager::MaxTokens() {
  absl::MutexLock lock(&mu_);
  return directory_.MaxTokens();
}

int64_t KvManager::MaxTokensAllUp() {
  absl::MutexLock lock(&mu_);
  return directory_.MaxTokensAllUp();
}

KvUsage KvManager::Usage() {
  absl::MutexLock lock(&mu_);
  return {directory_.total_blocks(), directory_.used_blocks()};
}

int64_t KvManager::num_sequences() {
  absl::MutexLock lock(&mu_);
  return directory_.num_sequences();
}

int32_t KvManager::num_pools_alive() {
  absl::MutexLock lock(&mu_);
  int32_t n = 0;
  for (int32_t w = 0; w < directory_.num_workers(); ++w) n += directory_.alive(w) ? 1 : 0;
  return n;
}

std::vector<KvManager::PoolStats> KvManager::pool_stats() {
  absl::MutexLock lock(&mu_);
  std::vector<PoolStats> out;
  for (size_t i = 0; i < pools_.size(); ++i) {
    const int32_t w = static_cast<int32_t>(i);
    out.push_back({pools_[i].name, directory_.alive(w), directory_.worker_num_blocks(w),
                   directory_.alive(w) ? directory_.worker_free_blocks(w) : 0});
  }
  return out;
}

std::string KvManager::RenderMetrics(const std::string& model) {
  const KvManagerStats s = stats();
  const std::string m = absl::StrCat("model_name=\"", model, "\"");
  std::string out;
  auto line = [&](const char* name, const char* type, const char* help, int64_t v) {
    absl::StrAppend(&out, "# HELP kvasir:", name, " ", help, "\n# TYPE kvasir:", name, " ", type,
                    "\nkvasir:", name, "{", m, "} ", v, "\n");
  };
  line("kv_pending_growths", "gauge", "Running sequences waiting for KV blocks to grow.",
       s.pending_growths);
  line("kv_pending_admissions", "gauge", "Requests waiting for KV blocks to start.",
       s.pending_admissions);
  line("kv_preemptions_ordered_total", "counter",
       "Sequences preempted, on any decoder, so that an older request could grow.",
       s.preemptions_ordered_total);
  line("kv_refusals_total", "counter", "KV allocations answered 'not now'.", s.refusals_total);
  line("kv_sequences_lost_total", "counter",
       "Sequences whose KV was lost with an attention worker (recomputed).",
       s.sequences_lost_total);
  line("kv_pools_down_total", "counter", "Times an attention worker was declared down.",
       s.pools_down_total);
  line("kv_decoders_expired_total", "counter",
       "Decoders whose lease expired or that restarted (their KV freed).",
       s.decoders_expired_total);
  line("kv_sequences_reclaimed_total", "counter",
       "Sequences freed for a dead or restarted decoder.", s.sequences_reclaimed_total);
  out += "# HELP kvasir:kv_pool_blocks KV blocks of each attention worker's pool.\n"
         "# TYPE kvasir:kv_pool_blocks gauge\n";
  const std::vector<PoolStats> pools = pool_stats();
  for (const PoolStats& p : pools) {
    absl::StrAppend(&out, "kvasir:kv_pool_blocks{", m, ",pool=\"", p.name, "\",state=\"total\"} ",
                    p.blocks_total, "\n");
    absl::StrAppend(&out, "kvasir:kv_pool_blocks{", m, ",pool=\"", p.name, "\",state=\"free\"} ",
                    p.blocks_free, "\n");
  }
  out += "# HELP kvasir:kv_pool_up 1 while the attention worker answers.\n"
         "# TYPE kvasir:kv_pool_up gauge\n";
  for (const PoolStats& p : pools) {
    absl::StrAppend(&out, "kvasir:kv_pool_up{", m, ",pool=\"", p.name, "\"} ", p.alive ? 1 : 0,
                    "\n");
  }
  return out;
}

KvManagerStats KvManager::stats() {
  absl::MutexLock lock(&mu_);
  KvManagerStats s = stats_;
  for (const auto& [key, p] : pending_) (p.growth ? s.pending_growths : s.pending_admissions)++;
  return s;
}

}  // namespace kvasir

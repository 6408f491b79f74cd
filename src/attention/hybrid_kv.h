// The KV of the hybrid executor (DistAttention across GPU and host memory): each sequence's
// first tokens in a near pool (the decoder's GPU pool) while it has room, the rest in a far one
// (attention workers in host memory), attention over both parts merged by their log-sum-exp.
//
// Placement: a sequence's tokens [0, near_end) are near and [near_end, length) far. It grows
// near until the policy (HybridPlacement) says stop; from then on ("spilled") every new token
// goes far and near_end never moves, so each part is a contiguous run of positions, the far
// one held by the far executor as a sequence of its own whose position 0 is near_end. The
// first blocks (the attention sinks, read by every query) are always near: a new sequence
// whose first tokens do not fit there waits, as on a full pool. The recent tail is not kept
// near: exact attention reads every token each step, so what matters is how many tokens each
// side holds (the GPU's share of the step's KV bytes), not which ones.
//
// HybridKv is the scheduler's KvCapacity over the two pools; the runner asks it where a step's
// tokens go (NearEnd) and tells it when they are stored (Advance). Grow once per step, before
// it (a repeat at the same length for no more tokens is a no-op). Prefix caching and kv_policy
// eviction are not offered over the split.
#pragma once

#include <cstdint>
#include <limits>
#include <unordered_map>

#include "kvcache/kv_cache.h"
#include "kvcache/kv_capacity.h"

namespace kvasir {

struct HybridPlacementOptions {
  // Tokens at a sequence's start that must be near (its sink blocks); at least 1.
  int32_t sink_tokens = 16;
  // At most this many tokens of one sequence near (0: no cap). A small cap forces segments onto
  // the far pool (tests, and a fair share of a small GPU pool among long sequences).
  int64_t max_near_tokens = 0;
  // Near blocks kept free for the sinks of sequences that arrive later: past its sinks a
  // sequence grows near only while more than this many blocks stay free. (CUDA runner: < 0
  // picks room for 8 sequences' first blocks, at most 1/16 of the pool.)
  int64_t reserve_blocks = 0;
};

class HybridPlacement {
 public:
  explicit HybridPlacement(HybridPlacementOptions o) : o_(o) {}
  const HybridPlacementOptions& options() const { return o_; }
  // How many of the n new tokens of a sequence that holds near_len tokens near (all of its
  // tokens: it has not spilled) go near, when the near pool could take `room` more of them now
  // and `room_above_reserve` without dipping into the reserve; the rest go far and the
  // sequence spills. -1: its sinks do not fit near, so it must wait.
  int32_t NearShare(int64_t near_len, int32_t n, int64_t room, int64_t room_above_reserve) const;

 private:
  HybridPlacementOptions o_;
};

class HybridKv : public KvCapacity {
 public:
  static constexpr int32_t kAllNear = std::numeric_limits<int32_t>::max();

  // near_cache is the near pool's bookkeeping (room is read from it), `near` its capacity
  // (which may do more on Release, as the CUDA runner's slot capacity does), `far` the far
  // executor's. Both count blocks of the same size (block_size tokens of one layer and KV head).
  HybridKv(const KvCache* near_cache, KvCapacity* near, KvCapacity* far,
           HybridPlacementOptions options);

  absl::Status Grow(int64_t seq_id, int32_t n) override;
  int64_t BlocksNeeded(int64_t seq_id, int32_t n) const override;
  int64_t BlocksForTokens(int64_t tokens) const override { return near_->BlocksForTokens(tokens); }
  void Release(int64_t seq_id) override;
  bool Contains(int64_t seq_id) const override { return seqs_.count(seq_id) > 0; }
  absl::Status CheckFits(int64_t tokens) const override;
  KvUsage Usage() const override;
  bool shared() const override { return far_->shared(); }
  void SetPriorityFn(PriorityFn fn) override { far_->SetPriorityFn(std::move(fn)); }
  std::vector<int64_t> TakePreemptions() override { return far_->TakePreemptions(); }

  // Positions below this are near, the rest far (kAllNear while the sequence has not spilled).
  int32_t NearEnd(int64_t seq_id) const;
  // Tokens stored so far (near and far), advanced by the runner after each step.
  int32_t Length(int64_t seq_id) const;
  void Advance(int64_t seq_id, int32_t n);
  // Tokens of a step of n tokens from `start` that go near.
  static int32_t NearPart(int32_t near_end, int32_t start, int32_t n);

  const HybridPlacement& placement() const { return placement_; }
  // For sequences placed from now on (benchmarks); sequences already split keep their split.
  void set_placement(HybridPlacementOptions o) { placement_ = HybridPlacement(o); }

 private:
  struct Seq {
    int32_t near_end = kAllNear;
    int32_t length = 0;
    // The last successful Grow: at this length, for this many tokens. The far pool may count
    // every Grow as more tokens (DistributedAttention does), so a repeat is not passed on.
    int32_t grown_at = -1, grown_n = 0;
  };
  // Tokens the near pool could take for the sequence now: in total and above the reserve.
  void NearRoom(int64_t seq_id, int64_t* room, int64_t* above_reserve) const;
  // The near part of a step of n tokens from the sequence's length (policy for a sequence that
  // has not spilled); -1 when it must wait.
  int32_t PlanNear(int64_t seq_id, int32_t n) const;

  const KvCache* near_cache_;
  KvCapacity* near_;
  KvCapacity* far_;
  HybridPlacement placement_;
  std::unordered_map<int64_t, Seq> seqs_;
};

}  // namespace kvasir

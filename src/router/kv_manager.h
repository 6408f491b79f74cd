// The cluster's KV manager (DistKV-LLM's gManager), hosted by the router. One implementation for
// both modes: in `kvasir serve` its pools are attention shards of the same process; in a cluster
// they are attention workers reached over gRPC (transport/directory_grpc.cc adapts it to the
// KvDirectory service and the workers' AttentionControl). kvcache/kv_directory.h keeps the
// bookkeeping (which pool holds which token range of which sequence); this class decides, over
// every decoder at once, who may take blocks.
//
// Why: each decoder's scheduler preempts only its own sequences. With several decoders sharing
// the pools, each can end up holding half of the KV with every sequence waiting for blocks the
// other decoder holds: a deadlock. The rules that prevent it:
//
// * Priority. Every allocation carries its request's arrival order at the router (smaller is
//   older); a recomputed request keeps its priority.
// * Growth before admission, oldest first. A running sequence that cannot grow is recorded as a
//   pending growth of so many blocks on a target pool. While it is pending, blocks on that pool
//   go to it first: a younger sequence's growth there is refused, and no sequence is admitted
//   (Allocate) while any growth, or an older admission, is pending.
// * Preemption across decoders. When the oldest pending growth is not covered by free blocks
//   (plus those of victims already chosen), the youngest sequences younger than it that hold
//   blocks on its target pool are chosen as victims, on whatever decoder they run. A decoder
//   learns its victims from TakePreemptions (the gRPC client polls it, and every reply carries
//   them), preempts them (recompute later) and frees their KV. Undelivered or ignored orders are
//   delivered again after a second.
// * Pending entries expire when their sequence stops asking (cancelled, decoder gone).
//
// So the oldest running request always gets its blocks — from free blocks, or from younger
// requests — and every request finishes, however the decoders interleave (kv_manager_test).
//
// Locking: one mutex over the bookkeeping, never held across a pool call (an RPC): a plan is
// recorded first, carried out unlocked, and undone if the pool refuses.
#pragma once

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "attention/attention_shard.h"
#include "attention/distributed_attention.h"
#include "common/status.h"
#include "kvcache/kv_directory.h"
#include "scheduler/clock.h"

namespace kvasir {

// One pool of KV blocks (an attention worker's), as the manager reaches it. Calls may block on
// the network; Unavailable or DeadlineExceeded mark the pool dead (no new segments).
class KvPoolClient {
 public:
  virtual ~KvPoolClient() = default;
  virtual absl::Status AllocateSegment(int64_t key, int32_t base, int32_t capacity) = 0;
  virtual absl::Status ExtendSegment(int64_t key, int32_t capacity) = 0;
  virtual absl::Status FreeSegment(int64_t key) = 0;
};

// An attention shard of this process as a pool.
class InProcessPool : public KvPoolClient {
 public:
  explicit InProcessPool(AttentionShard* shard) : shard_(shard) {}
  absl::Status AllocateSegment(int64_t key, int32_t base, int32_t capacity) override {
    return shard_->AllocateSegment(key, base, capacity);
  }
  absl::Status ExtendSegment(int64_t key, int32_t capacity) override {
    return shard_->ExtendSegment(key, capacity);
  }
  absl::Status FreeSegment(int64_t key) override {
    shard_->FreeSegment(key);
    return absl::OkStatus();
  }

 private:
  AttentionShard* shard_;
};

struct KvManagerOptions {
  // A pending request that has not asked again for this long is forgotten.
  absl::Duration pending_ttl = absl::Seconds(2);
  // A preemption order still unanswered after this long is delivered again.
  absl::Duration redeliver_after = absl::Seconds(1);
};

struct KvManagerStats {
  int64_t pending_growths = 0;
  int64_t pending_admissions = 0;
  int64_t preemptions_ordered_total = 0;  // victims chosen for another sequence's growth
  int64_t refusals_total = 0;             // Allocate/Extend answered "not now"
  int64_t sequences_lost_total = 0;       // had a segment on a pool that went down
  int64_t pools_down_total = 0;
  int64_t decoders_expired_total = 0;     // leases expired or restarts: their blocks freed
  int64_t sequences_reclaimed_total = 0;  // freed for a dead or restarted decoder
};

class KvManager : public SegmentDirectory {
 public:
  // blocks_per_token_block: blocks one block_size-token slice of a sequence takes in a pool
  // (num_layers * num_kv_heads with head-granular pages). `clock` must outlive the manager.
  KvManager(int64_t blocks_per_token_block, int32_t block_size, sched::Clock* clock,
            KvManagerOptions options = {});
  ~KvManager() override;

  // Registers a pool (not owned) named `name`: the address its data plane is reached at.
  void AddPool(std::string name, int64_t num_blocks, KvPoolClient* pool);

  // ---- Faults.
  // The pool is gone (dead or frozen) with its KV: every sequence that had a segment there is
  // lost — it is ordered to be preempted (its decoder recomputes it on the pools left), and
  // Extend answers Aborted for it until it is freed. No new segments go there.
  void PoolDown(const std::string& name);
  // Keys whose segments the pool may still hold from before it went down (a frozen worker that
  // resumes does): free them there before PoolUp. Each key is returned once.
  std::vector<int64_t> TakeDroppedKeys(const std::string& name);
  // The pool answers again, with this size and free blocks: new segments may go there.
  void PoolUp(const std::string& name, int64_t num_blocks, int64_t free_blocks);
  bool pool_alive(const std::string& name);
  // Decoders (key prefixes) that have not called for longer than `lease`: dead or cut off.
  std::vector<int64_t> ExpiredDecoders(absl::Duration lease);
  // Frees every sequence of decoder `key_prefix` (its lease expired, or it restarted) and
  // forgets the decoder until it calls again. Returns how many were freed.
  int64_t FreeDecoder(int64_t key_prefix);

  // SegmentDirectory.
  absl::StatusOr<std::vector<SegmentPlacement>> Allocate(int64_t seq_key, int64_t tokens,
                                                         int64_t priority) override;
  absl::StatusOr<std::vector<SegmentPlacement>> Extend(int64_t seq_key, int64_t tokens,
                                                       int64_t priority) override;
  void Free(int64_t seq_key) override;
  std::pair<int64_t, int32_t> BlockShape() override;
  int64_t MaxTokens() override;
  int64_t MaxTokensAllUp() override;
  KvUsage Usage() override;
  std::vector<int64_t> TakePreemptions(int64_t key_prefix) override;

  int64_t num_sequences();
  int32_t num_pools_alive();
  KvManagerStats stats();
  struct PoolStats {
    std::string name;
    bool alive = false;
    int64_t blocks_total = 0;
    int64_t blocks_free = 0;
  };
  std::vector<PoolStats> pool_stats();
  // Prometheus text: per-pool blocks and liveness, pending requests, orders, faults.
  std::string RenderMetrics(const std::string& model);

 private:
  struct Pending {
    int64_t priority = 0;
    int64_t blocks = 0;
    bool growth = false;  // Extend of a running sequence (else an admission)
    int32_t target = -1;  // growth: the pool its blocks must come from
    absl::Time expires;
  };
  struct Order {
    bool delivered = false;
    absl::Time delivered_at;
  };
  struct Pool {
    std::string name;
    KvPoolClient* client = nullptr;
  };

  // Blocks that must stay free for pending requests that go before one of `priority`.
  struct Held {
    std::vector<int64_t> per_pool;  // pending growths, on their target pools
    int64_t admissions = 0;         // pending admissions, anywhere
  };
  Held Reserved(int64_t seq_key, int64_t priority, bool admission) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool Respects(const Held& h) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Expire() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Refuse(int64_t seq_key, const Pending& p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Pools a growth of `seq_key` may take blocks from: its tail's, and those holding none of it.
  std::vector<int32_t> GrowthPools(int64_t seq_key) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int64_t BlocksOn(int64_t seq_key, int32_t pool) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Orders victims for the oldest pending growth when free blocks do not cover it.
  void ChooseVictims() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::vector<SegmentPlacement> Placements(int64_t seq_key) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Forget(int64_t seq_key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void NoteFailure(int32_t pool, const absl::Status& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DropPool(int32_t pool) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int32_t PoolIndex(const std::string& name) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Touch(int64_t key_prefix) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static absl::Status PoolError(const absl::Status& s);

  sched::Clock* const clock_;
  const KvManagerOptions options_;
  mutable absl::Mutex mu_;
  KvDirectory directory_ ABSL_GUARDED_BY(mu_);
  std::vector<Pool> pools_ ABSL_GUARDED_BY(mu_);
  std::unordered_map<int64_t, int64_t> priority_ ABSL_GUARDED_BY(mu_);   // placed sequences
  std::set<std::pair<int64_t, int64_t>> by_priority_ ABSL_GUARDED_BY(mu_);  // (priority, key)
  std::unordered_map<int64_t, Pending> pending_ ABSL_GUARDED_BY(mu_);
  std::unordered_map<int64_t, Order> orders_ ABSL_GUARDED_BY(mu_);  // victims still placed
  std::set<int64_t> lost_ ABSL_GUARDED_BY(mu_);  // lost a segment with its pool
  std::unordered_map<int32_t, std::vector<int64_t>> dropped_ ABSL_GUARDED_BY(mu_);  // by pool
  std::unordered_map<int64_t, absl::Time> contact_ ABSL_GUARDED_BY(mu_);  // by decoder
  KvManagerStats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvasir

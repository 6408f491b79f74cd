// Where attention over the KV history runs, seen from the model runner and the engine.
//
// The model runner computes everything except attention over the history; per layer it hands
// the step's q (and new k, v) to an AttentionExecutor, which appends the new K/V wherever the
// sequence's KV lives and returns the attention output. LocalAttention (local_attention.h) keeps
// the KV in this process; DistributedAttention (src/attention/) spreads each sequence over
// attention workers in segments and merges their partial results (DESIGN.md, DistAttention).
//
// The engine's batch scheduler (scheduler/batch_scheduler.h) grows each sequence's KV as it
// runs (Grow), asks how many blocks that takes, and frees it when the sequence finishes or is
// preempted (Release).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "common/status.h"

namespace kvasir {

struct AttentionStepSeq {
  int64_t seq_id = 0;
  int32_t start_pos = 0;   // position of the first new token
  int32_t num_tokens = 0;  // new tokens this step (rows in the step, in batch order)
};

struct KvUsage {
  int64_t blocks_total = 0;
  int64_t blocks_used = 0;  // reserved or holding tokens
};

// Where a sequence's KV lives, seen by the engine's scheduler: room for tokens, in blocks.
class KvCapacity {
 public:
  virtual ~KvCapacity() = default;

  // Makes room for `n` more tokens of the sequence (a new one starts empty), all or nothing.
  // ResourceExhausted: no room now.
  virtual absl::Status Grow(int64_t seq_id, int32_t n) = 0;
  // Blocks Grow(seq_id, n) would take now.
  virtual int64_t BlocksNeeded(int64_t seq_id, int32_t n) const = 0;
  // Blocks a sequence of `tokens` tokens takes from empty.
  virtual int64_t BlocksForTokens(int64_t tokens) const = 0;
  // Frees everything the sequence holds; unknown ids are ignored.
  virtual void Release(int64_t seq_id) = 0;
  virtual bool Contains(int64_t seq_id) const = 0;
  // InvalidArgument when a sequence of `tokens` tokens could never be held.
  virtual absl::Status CheckFits(int64_t tokens) const = 0;
  // Blocks over the whole pool (free = total - used); shared pools report the last known value.
  virtual KvUsage Usage() const = 0;

  // For a pool shared with other decoders: the priority of a sequence (its request's arrival
  // order at the router, smaller is older), which the pool's manager uses to decide who grows
  // first. Without one, the sequence id is its priority.
  using PriorityFn = std::function<int64_t(int64_t seq_id)>;
  // True for a pool under a KV manager that must hear of every need (sched::KvBudget::shared).
  virtual bool shared() const { return false; }
  virtual void SetPriorityFn(PriorityFn fn) {}
  // Sequences the shared pool's manager asks this decoder to preempt (recompute later) so that
  // an older request elsewhere can grow. Polled by the engine between steps.
  virtual std::vector<int64_t> TakePreemptions() { return {}; }
};

class AttentionExecutor : public KvCapacity {
 public:
  // ---- One forward step.
  // Checks and makes room for the step's new tokens; on error nothing changed.
  virtual absl::Status BeginStep(std::span<const AttentionStepSeq> seqs) = 0;
  // Layer `layer` of the step begun last: qkv is [T, qkv_stride] in step order, each row
  // q [num_heads * head_dim] | k [kv_dim] | v [kv_dim] with RoPE applied. Appends k, v and
  // writes causal attention over each sequence's whole history to out [T, num_heads * head_dim].
  virtual absl::Status Attend(int32_t layer, const float* qkv, int64_t qkv_stride,
                              float* out) = 0;
};

}  // namespace kvasir

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
#include <span>

#include "common/status.h"
#include "kvcache/eviction/kv_policy.h"
#include "kvcache/kv_capacity.h"

namespace kvasir {

struct AttentionStepSeq {
  int64_t seq_id = 0;
  int32_t start_pos = 0;   // position of the first new token
  int32_t num_tokens = 0;  // new tokens this step (rows in the step, in batch order)
  // Head-aware eviction (kvcache/eviction): the request's policy (null: keep everything) and
  // its prompt length; the executor applies it once the prompt's last token has been attended.
  const KvPolicy* kv_policy = nullptr;
  int32_t prompt_len = 0;
};

struct AttentionShape {
  int32_t num_heads = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
  int32_t num_layers = 0;
  int32_t q_dim() const { return num_heads * head_dim; }
  int32_t kv_dim() const { return num_kv_heads * head_dim; }
  int32_t group() const { return num_heads / num_kv_heads; }
};

class AttentionExecutor : public KvCapacity {
 public:
  // ---- One forward step.
  // Checks and makes room for the step's new tokens; on error nothing changed.
  virtual absl::Status BeginStep(std::span<const AttentionStepSeq> seqs) = 0;
  // Layer `layer` of the step begun last: qkv is [T, qkv_stride] in step order, each row
  // q [num_heads * head_dim] | k [kv_dim] | v [kv_dim] with RoPE applied. Appends k, v and
  // writes causal attention over each sequence's whole history to out [T, num_heads * head_dim]
  // and, when lse is not null, each row's natural-log log-sum-exp of the scores to lse
  // [T, num_heads] (what merging this result with attention over other tokens needs: the
  // hybrid executor's host part).
  virtual absl::Status Attend(int32_t layer, const float* qkv, int64_t qkv_stride, float* out,
                              float* lse) = 0;
};

}  // namespace kvasir

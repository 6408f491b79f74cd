// AttentionExecutor over a KvCache of this process (the embedded mode and the CPU reference).
#pragma once

#include <unordered_map>
#include <vector>

#include "attention/attention_executor.h"
#include "kvcache/eviction/retention.h"
#include "kvcache/kv_cache.h"
#include "kvcache/kv_capacity.h"
#include "runtime/backend.h"

namespace kvasir {

// Partial attention of `group` query heads at q over tokens [begin, end) of one page table,
// writing o [group, head_dim] and lse [group].
PagedAttentionParams TableAttention(const BlockPool& pool, const PageTable& table,
                                    int32_t head_dim, int32_t begin, int32_t end, const float* q,
                                    int32_t group, float* o, float* lse);

class LocalAttention : public AttentionExecutor {
 public:
  LocalAttention(KvCache* cache, Backend* backend, AttentionShape shape);

  // Cuts each attention range into segments of at most `tokens` (0: one segment), computed
  // separately and merged; checks that split attention is exact.
  void set_split(int32_t tokens) { split_ = tokens; }

  absl::Status Grow(int64_t seq_id, int32_t n) override { return capacity_.Grow(seq_id, n); }
  int64_t BlocksNeeded(int64_t seq_id, int32_t n) const override {
    return capacity_.BlocksNeeded(seq_id, n);
  }
  int64_t BlocksForTokens(int64_t tokens) const override {
    return capacity_.BlocksForTokens(tokens);
  }
  void Release(int64_t seq_id) override {
    evictions_.erase(seq_id);
    capacity_.Release(seq_id);
  }
  bool Contains(int64_t seq_id) const override { return capacity_.Contains(seq_id); }
  absl::Status CheckFits(int64_t tokens) const override { return capacity_.CheckFits(tokens); }
  KvUsage Usage() const override {
    KvUsage u = capacity_.Usage();
    u.evicted_blocks_total = evicted_blocks_;
    return u;
  }
  int32_t AdoptPrefix(int64_t seq_id, std::span<const int32_t> tokens) override {
    return capacity_.AdoptPrefix(seq_id, tokens);
  }
  void RegisterPrefix(int64_t seq_id, std::span<const int32_t> tokens) override {
    capacity_.RegisterPrefix(seq_id, tokens);
  }
  bool SupportsKvPolicies() const override { return cache_->pool().has_host_storage(); }
  int64_t KvTokensHeld(int64_t seq_id) const override;
  // The retention decided for one (layer, KV head) of a sequence; null before its prompt ended
  // or without a compressing policy.
  const HeadRetention* retention(int64_t seq_id, int32_t layer, int32_t kv_head) const;
  absl::Status BeginStep(std::span<const AttentionStepSeq> seqs) override;
  absl::Status Attend(int32_t layer, const float* qkv, int64_t qkv_stride, float* out,
                      float* lse) override;

 private:
  KvCache* cache_;
  CacheCapacity capacity_;
  Backend* backend_;
  AttentionShape shape_;
  int32_t split_ = 0;
  std::vector<AttentionStepSeq> step_;
  std::vector<float> o_parts_, lse_parts_;
  std::vector<PagedAttentionParams> items_;

  // ---- Head-aware eviction (kv_policy) per sequence.
  struct Eviction {
    KvPolicy policy;
    int32_t prompt_len = 0;
    int32_t window = 0;              // observation window, min(policy.window, prompt_len)
    std::vector<float> q;            // [num_layers, window, q_dim] the window's queries
    std::vector<uint8_t> decided;    // [num_layers]
    std::vector<HeadRetention> plan; // [num_layers * num_kv_heads] (keep lists dropped)
  };
  // After layer `layer` attended step entry b (rows from `row`): records the window's queries,
  // decides and compacts at the prompt's end, slides the compressed heads' windows later.
  void ApplyEviction(int32_t layer, const AttentionStepSeq& s, int64_t row, const float* qkv,
                     int64_t qkv_stride, Eviction& e);
  void RetainRows(int64_t seq_id, int32_t layer, int32_t kv_head, const std::vector<int32_t>& keep);
  std::unordered_map<int64_t, Eviction> evictions_;
  int64_t evicted_blocks_ = 0;
};

}  // namespace kvasir

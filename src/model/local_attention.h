// AttentionExecutor over a KvCache of this process (the embedded mode and the CPU reference).
#pragma once

#include <vector>

#include "kvcache/kv_cache.h"
#include "model/attention_executor.h"
#include "runtime/backend.h"

namespace kvasir {

struct AttentionShape {
  int32_t num_heads = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
  int32_t num_layers = 0;
  int32_t q_dim() const { return num_heads * head_dim; }
  int32_t kv_dim() const { return num_kv_heads * head_dim; }
  int32_t group() const { return num_heads / num_kv_heads; }
};

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

  absl::Status Grow(int64_t seq_id, int32_t n) override;
  int64_t BlocksNeeded(int64_t seq_id, int32_t n) const override;
  int64_t BlocksForTokens(int64_t tokens) const override;
  void Release(int64_t seq_id) override;
  bool Contains(int64_t seq_id) const override { return cache_->Contains(seq_id); }
  absl::Status CheckFits(int64_t tokens) const override;
  KvUsage Usage() const override;
  absl::Status BeginStep(std::span<const AttentionStepSeq> seqs) override;
  absl::Status Attend(int32_t layer, const float* qkv, int64_t qkv_stride, float* out) override;

 private:
  KvCache* cache_;
  Backend* backend_;
  AttentionShape shape_;
  int32_t split_ = 0;
  std::vector<AttentionStepSeq> step_;
  std::vector<float> o_parts_, lse_parts_;
  std::vector<PagedAttentionParams> items_;
};

}  // namespace kvasir

#include "attention/local_attention.h"

#include <algorithm>
#include <cmath>

#include "common/logging.h"

namespace kvasir {

PagedAttentionParams TableAttention(const BlockPool& pool, const PageTable& table,
                                    int32_t head_dim, int32_t begin, int32_t end, const float* q,
                                    int32_t group, float* o, float* lse) {
  PagedAttentionParams p;
  p.k_pool = pool.k_data();  // exactly one of the fp32 and bf16 pairs is set
  p.v_pool = pool.v_data();
  p.k_pool_bf16 = pool.k_bf16();
  p.v_pool_bf16 = pool.v_bf16();
  p.block_table = table.blocks.data();
  p.block_size = pool.block_size();
  p.head_dim = head_dim;
  p.begin = begin;
  p.end = end;
  p.q = q;
  p.group = group;
  p.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  p.o = o;
  p.lse = lse;
  return p;
}

LocalAttention::LocalAttention(KvCache* cache, Backend* backend, AttentionShape shape)
    : cache_(cache), capacity_(cache), backend_(backend), shape_(shape) {
  const KvCacheConfig& kc = cache->config();
  KVASIR_CHECK(kc.num_layers == shape.num_layers);
  KVASIR_CHECK(kc.num_kv_heads == shape.num_kv_heads);
  KVASIR_CHECK(kc.head_dim == shape.head_dim);
}

absl::Status LocalAttention::BeginStep(std::span<const AttentionStepSeq> seqs) {
  int64_t blocks_needed = 0;
  for (const AttentionStepSeq& s : seqs) {
    if (!cache_->Contains(s.seq_id)) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", s.seq_id, " has no KV cache"));
    }
    blocks_needed += cache_->BlocksNeeded(s.seq_id, s.num_tokens);
  }
  if (blocks_needed > cache_->pool().num_free()) {
    return absl::ResourceExhaustedError(absl::StrCat("KV cache full: the step needs ",
                                                     blocks_needed, " blocks, ",
                                                     cache_->pool().num_free(), " free"));
  }
  for (const AttentionStepSeq& s : seqs) {
    RETURN_IF_ERROR(cache_->Reserve(s.seq_id, s.num_tokens));
  }
  step_.assign(seqs.begin(), seqs.end());
  return absl::OkStatus();
}

absl::Status LocalAttention::Attend(int32_t layer, const float* qkv, int64_t qkv_stride,
                                    float* out) {
  const int32_t KVH = shape_.num_kv_heads, G = shape_.group(), hd = shape_.head_dim;
  const int64_t qd = shape_.q_dim(), kvd = shape_.kv_dim();
  int64_t T = 0;
  for (const AttentionStepSeq& s : step_) T += s.num_tokens;

  // Append the new K/V of every (sequence, kv_head), remembering each table's old length.
  std::vector<int32_t> len_before(step_.size() * KVH);
  {
    int64_t r = 0;
    for (size_t b = 0; b < step_.size(); ++b) {
      for (int32_t kh = 0; kh < KVH; ++kh) {
        len_before[b * KVH + kh] = cache_->table(step_[b].seq_id, layer, kh).length;
        const float* k = qkv + r * qkv_stride + qd + kh * hd;
        cache_->Append(step_[b].seq_id, layer, kh, k, k + kvd, step_[b].num_tokens, qkv_stride);
      }
      r += step_[b].num_tokens;
    }
  }

  // Partial attention per (token, kv_head, segment), then merge per (token, kv_head).
  const int32_t split = split_;
  int32_t max_parts = 1;
  if (split > 0) {
    for (size_t b = 0; b < step_.size(); ++b) {
      for (int32_t kh = 0; kh < KVH; ++kh) {
        int32_t len = cache_->table(step_[b].seq_id, layer, kh).length;
        max_parts = std::max(max_parts, (len + split - 1) / split);
      }
    }
  }
  const int64_t groups = T * KVH;
  o_parts_.resize(groups * max_parts * G * hd);
  lse_parts_.resize(groups * max_parts * G);
  items_.clear();
  items_.reserve(groups * max_parts);
  const BlockPool& pool = cache_->pool();
  int64_t r = 0;
  for (size_t b = 0; b < step_.size(); ++b) {
    for (int32_t i = 0; i < step_[b].num_tokens; ++i, ++r) {
      for (int32_t kh = 0; kh < KVH; ++kh) {
        const PageTable& table = cache_->table(step_[b].seq_id, layer, kh);
        const int32_t end = len_before[b * KVH + kh] + i + 1;  // causal
        const int64_t g = r * KVH + kh;
        for (int32_t part = 0; part < max_parts; ++part) {
          const int32_t begin = split > 0 ? std::min(end, part * split) : 0;
          items_.push_back(TableAttention(
              pool, table, hd, begin, split > 0 ? std::min(end, (part + 1) * split) : end,
              qkv + r * qkv_stride + static_cast<int64_t>(kh) * G * hd, G,
              o_parts_.data() + (g * max_parts + part) * G * hd,
              lse_parts_.data() + (g * max_parts + part) * G));
        }
      }
    }
  }
  backend_->PagedPartialAttention(items_.data(), static_cast<int64_t>(items_.size()));
  // Group g = (token r, kv head kh) lands at out[r, kh * G * hd], i.e. stride G * hd.
  backend_->MergeAttention(groups, max_parts, o_parts_.data(), lse_parts_.data(), G, hd, out,
                           static_cast<int64_t>(G) * hd);
  return absl::OkStatus();
}

}  // namespace kvasir

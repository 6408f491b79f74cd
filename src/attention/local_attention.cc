#include "attention/local_attention.h"

#include <algorithm>
#include <cmath>

#include "common/logging.h"
#include "kernels/attention/paged_attention_ref.h"

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
  for (const AttentionStepSeq& s : seqs) {
    const KvPolicy* p = s.kv_policy;
    if (!p || !p->Compresses(s.prompt_len) || evictions_.count(s.seq_id)) continue;
    if (s.start_pos >= s.prompt_len) continue;  // past its prompt already: nothing to decide
    Eviction& e = evictions_[s.seq_id];
    e.policy = *p;
    e.prompt_len = s.prompt_len;
    e.window = std::min(p->window, s.prompt_len);
    e.q.assign(static_cast<size_t>(shape_.num_layers) * e.window * shape_.q_dim(), 0.0f);
    e.decided.assign(shape_.num_layers, 0);
    e.plan.assign(static_cast<size_t>(shape_.num_layers) * shape_.num_kv_heads, HeadRetention{});
  }
  return absl::OkStatus();
}

int64_t LocalAttention::KvTokensHeld(int64_t seq_id) const {
  if (!cache_->Contains(seq_id)) return -1;
  return cache_->TotalTokens(seq_id) / (int64_t{shape_.num_layers} * shape_.num_kv_heads);
}

const HeadRetention* LocalAttention::retention(int64_t seq_id, int32_t layer,
                                               int32_t kv_head) const {
  auto it = evictions_.find(seq_id);
  if (it == evictions_.end() || !it->second.decided[layer]) return nullptr;
  return &it->second.plan[static_cast<size_t>(layer) * shape_.num_kv_heads + kv_head];
}

void LocalAttention::RetainRows(int64_t seq_id, int32_t layer, int32_t kv_head,
                                const std::vector<int32_t>& keep) {
  const size_t before = cache_->table(seq_id, layer, kv_head).blocks.size();
  absl::Status st = cache_->Retain(seq_id, layer, kv_head, keep);
  KVASIR_CHECK(st.ok());  // the indices are built ascending and in range here
  evicted_blocks_ += static_cast<int64_t>(before) -
                     static_cast<int64_t>(cache_->table(seq_id, layer, kv_head).blocks.size());
}

void LocalAttention::ApplyEviction(int32_t layer, const AttentionStepSeq& s, int64_t row,
                                   const float* qkv, int64_t qkv_stride, Eviction& e) {
  const int32_t KVH = shape_.num_kv_heads, hd = shape_.head_dim;
  const int64_t qd = shape_.q_dim();
  const int32_t P = e.prompt_len, w = e.window;
  const int32_t bs = cache_->config().block_size;
  float* wq = e.q.data() + static_cast<int64_t>(layer) * w * qd;
  for (int32_t i = 0; i < s.num_tokens; ++i) {
    const int32_t pos = s.start_pos + i;
    if (pos >= P - w && pos < P) {
      std::copy(qkv + (row + i) * qkv_stride, qkv + (row + i) * qkv_stride + qd,
                wq + static_cast<int64_t>(pos - (P - w)) * qd);
    }
  }
  HeadRetention* plan = e.plan.data() + static_cast<int64_t>(layer) * KVH;
  if (!e.decided[layer]) {
    if (!(s.start_pos <= P - 1 && P - 1 < s.start_pos + s.num_tokens)) return;
    // The prompt's last token was attended with the full KV: decide, then compact. Table
    // entries are still positions here (this layer has not been compacted before).
    const BlockPool& pool = cache_->pool();
    std::vector<HeadObservation> obs;
    if (e.policy.NeedsScores()) {
      obs = ObserveLayer(shape_.num_heads, KVH, hd, P, w, wq, qd,
                         1.0f / std::sqrt(static_cast<float>(hd)),
                         [&](int32_t kh, int32_t t, float* k, float* v) {
                           const PageTable& tb = cache_->table(s.seq_id, layer, kh);
                           pool.ReadRow(tb.blocks[t / bs], t % bs, k, v);
                         });
    }
    std::vector<HeadRetention> decided = PlanLayerRetention(e.policy, KVH, P, obs);
    for (int32_t kh = 0; kh < KVH; ++kh) {
      std::vector<int32_t> keep = std::move(decided[kh].keep);
      const int32_t len = cache_->table(s.seq_id, layer, kh).length;
      for (int32_t t = P; t < len; ++t) keep.push_back(t);  // a recompute's tokens after it
      if (static_cast<int32_t>(keep.size()) < len) RetainRows(s.seq_id, layer, kh, keep);
      decided[kh].keep.clear();
      plan[kh] = std::move(decided[kh]);
    }
    e.decided[layer] = 1;
  }
  // While decoding: a compressed head at its cap plus a block lets its oldest block of
  // unpinned (recent-window) tokens go.
  for (int32_t kh = 0; kh < KVH; ++kh) {
    const HeadRetention& r = plan[kh];
    if (r.cap < 0) continue;
    const int32_t len = cache_->table(s.seq_id, layer, kh).length;
    if (len < r.cap + bs) continue;
    const int32_t drop = len - r.cap;  // back to the cap
    std::vector<int32_t> keep;
    keep.reserve(len - drop);
    for (int32_t t = 0; t < r.pinned; ++t) keep.push_back(t);
    for (int32_t t = r.pinned + drop; t < len; ++t) keep.push_back(t);
    RetainRows(s.seq_id, layer, kh, keep);
  }
}

absl::Status LocalAttention::Attend(int32_t layer, const float* qkv, int64_t qkv_stride,
                                    float* out, float* lse) {
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
  if (lse != nullptr) {
    // Group g = (token r, kv head kh) holds query heads kh * G .. of row r: lse[g * G + i].
    for (int64_t g = 0; g < groups; ++g) {
      for (int32_t i = 0; i < G; ++i) {
        lse[g * G + i] = MergeLse(max_parts, lse_parts_.data() + g * max_parts * G + i, G);
      }
    }
  }
  if (!evictions_.empty()) {
    int64_t row = 0;
    for (const AttentionStepSeq& s : step_) {
      auto it = evictions_.find(s.seq_id);
      if (it != evictions_.end()) ApplyEviction(layer, s, row, qkv, qkv_stride, it->second);
      row += s.num_tokens;
    }
  }
  return absl::OkStatus();
}

}  // namespace kvasir

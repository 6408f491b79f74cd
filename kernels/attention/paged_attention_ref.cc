#include "kernels/attention/paged_attention_ref.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace kvasir {

void PagedPartialAttentionRef(const PagedAttentionParams& p) {
  const int32_t d = p.head_dim, g = p.group;
  const int32_t n = std::max(0, p.end - p.begin);
  if (n == 0) {
    std::fill(p.o, p.o + static_cast<int64_t>(g) * d, 0.0f);
    std::fill(p.lse, p.lse + g, -std::numeric_limits<float>::infinity());
    return;
  }
  thread_local std::vector<float> scores;  // [group, n]
  thread_local std::vector<float> row;     // a bf16 K or V row widened
  scores.resize(static_cast<size_t>(g) * n);
  row.resize(d);
  // Row `pos` of a pool, as fp32.
  auto kv_row = [&](const float* f32, const uint16_t* bf16, int32_t pos) -> const float* {
    const int64_t at =
        (static_cast<int64_t>(p.block_table[pos / p.block_size]) * p.block_size +
         pos % p.block_size) * d;
    if (bf16 == nullptr) return f32 + at;
    for (int32_t i = 0; i < d; ++i) {
      const uint32_t bits = static_cast<uint32_t>(bf16[at + i]) << 16;
      std::memcpy(&row[i], &bits, sizeof(float));
    }
    return row.data();
  };
  // Pass 1: scores, one K row read per token for the whole group.
  for (int32_t t = 0; t < n; ++t) {
    const int32_t pos = p.begin + t;
    const float* k = kv_row(p.k_pool, p.k_pool_bf16, pos);
    for (int32_t h = 0; h < g; ++h) {
      const float* q = p.q + static_cast<int64_t>(h) * d;
      float s = 0.0f;
      for (int32_t i = 0; i < d; ++i) s += q[i] * k[i];
      scores[static_cast<size_t>(h) * n + t] = s * p.scale;
    }
  }
  // Softmax statistics per query head.
  thread_local std::vector<float> inv_sum;
  inv_sum.resize(g);
  for (int32_t h = 0; h < g; ++h) {
    float* s = scores.data() + static_cast<size_t>(h) * n;
    float m = *std::max_element(s, s + n);
    double l = 0.0;
    for (int32_t t = 0; t < n; ++t) {
      s[t] = std::exp(s[t] - m);
      l += s[t];
    }
    inv_sum[h] = static_cast<float>(1.0 / l);
    p.lse[h] = m + static_cast<float>(std::log(l));
    std::fill(p.o + static_cast<int64_t>(h) * d, p.o + static_cast<int64_t>(h + 1) * d, 0.0f);
  }
  // Pass 2: o = Σ p V, one V row read per token for the whole group.
  for (int32_t t = 0; t < n; ++t) {
    const int32_t pos = p.begin + t;
    const float* v = kv_row(p.v_pool, p.v_pool_bf16, pos);
    for (int32_t h = 0; h < g; ++h) {
      const float w = scores[static_cast<size_t>(h) * n + t];
      float* o = p.o + static_cast<int64_t>(h) * d;
      for (int32_t i = 0; i < d; ++i) o[i] += w * v[i];
    }
  }
  for (int32_t h = 0; h < g; ++h) {
    float* o = p.o + static_cast<int64_t>(h) * d;
    for (int32_t i = 0; i < d; ++i) o[i] *= inv_sum[h];
  }
}

void MergeAttentionRef(int32_t n, const float* o_parts, const float* lse_parts, int32_t rows,
                       int32_t head_dim, float* out, float* out_lse) {
  const float kNegInf = -std::numeric_limits<float>::infinity();
  for (int32_t r = 0; r < rows; ++r) {
    float m = kNegInf;
    for (int32_t j = 0; j < n; ++j) m = std::max(m, lse_parts[static_cast<int64_t>(j) * rows + r]);
    float* o = out + static_cast<int64_t>(r) * head_dim;
    std::fill(o, o + head_dim, 0.0f);
    if (m == kNegInf) {
      if (out_lse) out_lse[r] = kNegInf;
      continue;
    }
    double denom = 0.0;
    for (int32_t j = 0; j < n; ++j) {
      const float l = lse_parts[static_cast<int64_t>(j) * rows + r];
      if (l == kNegInf) continue;
      const float w = std::exp(l - m);
      denom += w;
      const float* oj = o_parts + (static_cast<int64_t>(j) * rows + r) * head_dim;
      for (int32_t i = 0; i < head_dim; ++i) o[i] += w * oj[i];
    }
    const float inv = static_cast<float>(1.0 / denom);
    for (int32_t i = 0; i < head_dim; ++i) o[i] *= inv;
    if (out_lse) out_lse[r] = m + static_cast<float>(std::log(denom));
  }
}

float MergeLse(int32_t n, const float* lse, int64_t stride) {
  const float kNegInf = -std::numeric_limits<float>::infinity();
  float m = kNegInf;
  for (int32_t j = 0; j < n; ++j) m = std::max(m, lse[j * stride]);
  if (m == kNegInf) return kNegInf;
  double denom = 0.0;
  for (int32_t j = 0; j < n; ++j) {
    if (lse[j * stride] != kNegInf) denom += std::exp(lse[j * stride] - m);
  }
  return m + static_cast<float>(std::log(denom));
}

}  // namespace kvasir

#include "kernels/attention/paged_attention_ref.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace kvasir {
namespace {

// Monolithic attention in double over contiguous K/V: the independent reference.
void NaiveAttention(const std::vector<float>& q, const std::vector<float>& k,
                    const std::vector<float>& v, int n, int g, int d, float scale,
                    std::vector<double>* out, std::vector<double>* lse) {
  out->assign(static_cast<size_t>(g) * d, 0.0);
  lse->assign(g, -INFINITY);
  for (int h = 0; h < g; ++h) {
    std::vector<double> s(n);
    double m = -INFINITY;
    for (int t = 0; t < n; ++t) {
      double acc = 0;
      for (int i = 0; i < d; ++i) acc += double(q[h * d + i]) * k[t * d + i];
      s[t] = acc * scale;
      m = std::max(m, s[t]);
    }
    double l = 0;
    for (int t = 0; t < n; ++t) l += std::exp(s[t] - m);
    for (int t = 0; t < n; ++t) {
      double w = std::exp(s[t] - m) / l;
      for (int i = 0; i < d; ++i) (*out)[h * d + i] += w * v[t * d + i];
    }
    if (n > 0) (*lse)[h] = m + std::log(l);
  }
}

struct Paged {
  std::vector<float> k_pool, v_pool;  // [num_blocks, block_size, d]
  std::vector<int32_t> table;
};

// Scatters contiguous K/V into a pool at shuffled block ids, like a real allocator would.
Paged Scatter(const std::vector<float>& k, const std::vector<float>& v, int n, int d, int bs,
              std::mt19937& rng) {
  Paged p;
  int nb = (n + bs - 1) / bs;
  int pool_blocks = nb + 3;
  std::vector<int32_t> ids(pool_blocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  p.table.assign(ids.begin(), ids.begin() + nb);
  p.k_pool.assign(static_cast<size_t>(pool_blocks) * bs * d, NAN);  // poison unused slots
  p.v_pool.assign(static_cast<size_t>(pool_blocks) * bs * d, NAN);
  for (int t = 0; t < n; ++t) {
    size_t dst = (static_cast<size_t>(p.table[t / bs]) * bs + t % bs) * d;
    std::copy(k.begin() + t * d, k.begin() + (t + 1) * d, p.k_pool.begin() + dst);
    std::copy(v.begin() + t * d, v.begin() + (t + 1) * d, p.v_pool.begin() + dst);
  }
  return p;
}

TEST(PagedAttentionRef, RandomSplitsMergeToMonolithic) {
  std::mt19937 rng(12345);
  std::normal_distribution<float> nd(0, 1);
  int cases = 0;
  for (int bs : {1, 3, 16}) {
    for (int g : {1, 4, 8}) {
      for (int n : {1, 2, 17, 100, 257}) {
        const int d = 32;
        const float scale = 1.0f / std::sqrt(float(d));
        std::vector<float> q(g * d), k(n * d), v(n * d);
        for (auto& x : q) x = nd(rng) * 2.0f;
        for (auto& x : k) x = nd(rng);
        for (auto& x : v) x = nd(rng);
        std::vector<double> ref, ref_lse;
        NaiveAttention(q, k, v, n, g, d, scale, &ref, &ref_lse);
        Paged pg = Scatter(k, v, n, d, bs, rng);
        for (int trial = 0; trial < 4; ++trial) {
          // Random cut points, duplicates allowed (empty segments).
          int parts = 1 + rng() % 5;
          std::vector<int> cuts = {0, n};
          for (int i = 0; i + 1 < parts; ++i) cuts.push_back(rng() % (n + 1));
          std::sort(cuts.begin(), cuts.end());
          int np = cuts.size() - 1;
          std::vector<float> o(np * g * d), lse(np * g);
          for (int j = 0; j < np; ++j) {
            PagedAttentionParams p;
            p.k_pool = pg.k_pool.data();
            p.v_pool = pg.v_pool.data();
            p.block_table = pg.table.data();
            p.block_size = bs;
            p.head_dim = d;
            p.begin = cuts[j];
            p.end = cuts[j + 1];
            p.q = q.data();
            p.group = g;
            p.scale = scale;
            p.o = o.data() + j * g * d;
            p.lse = lse.data() + j * g;
            PagedPartialAttentionRef(p);
          }
          std::vector<float> out(g * d, NAN), out_lse(g, NAN);
          MergeAttentionRef(np, o.data(), lse.data(), g, d, out.data(), out_lse.data());
          for (int i = 0; i < g * d; ++i) ASSERT_NEAR(out[i], ref[i], 1e-5) << bs << " " << g << " " << n;
          for (int h = 0; h < g; ++h) ASSERT_NEAR(out_lse[h], ref_lse[h], 1e-4);
          ++cases;
        }
      }
    }
  }
  EXPECT_EQ(cases, 3 * 3 * 5 * 4);
}

TEST(PagedAttentionRef, EmptyRangeIsNeutral) {
  const int d = 8, g = 2;
  std::vector<float> q(g * d, 1.0f), o(g * d, 7.0f), lse(g, 7.0f);
  PagedAttentionParams p;
  p.head_dim = d;
  p.group = g;
  p.q = q.data();
  p.o = o.data();
  p.lse = lse.data();
  p.begin = p.end = 5;
  PagedPartialAttentionRef(p);
  for (float x : o) EXPECT_EQ(x, 0.0f);
  for (float x : lse) EXPECT_TRUE(std::isinf(x) && x < 0);
  // Merging only empty parts yields zeros and -inf, never NaN.
  std::vector<float> out(g * d, NAN), out_lse(g, NAN);
  std::vector<float> o2(2 * g * d, 0.0f), lse2(2 * g, -INFINITY);
  MergeAttentionRef(2, o2.data(), lse2.data(), g, d, out.data(), out_lse.data());
  for (float x : out) EXPECT_EQ(x, 0.0f);
  for (float x : out_lse) EXPECT_TRUE(std::isinf(x) && x < 0);
}

TEST(PagedAttentionRef, LargeScoresDoNotOverflow) {
  const int d = 4, n = 3;
  std::vector<float> q = {100, 100, 100, 100}, k(n * d), v(n * d);
  for (int t = 0; t < n; ++t)
    for (int i = 0; i < d; ++i) k[t * d + i] = 10.0f * (t + 1), v[t * d + i] = t;
  std::vector<int32_t> table = {0};
  float o[4], lse;
  PagedAttentionParams p;
  p.k_pool = k.data();
  p.v_pool = v.data();
  p.block_table = table.data();
  p.block_size = 16;
  p.head_dim = d;
  p.end = n;
  p.q = q.data();
  p.o = o;
  p.lse = &lse;
  PagedPartialAttentionRef(p);
  for (float x : o) EXPECT_NEAR(x, 2.0f, 1e-6);  // all weight on the last token
  EXPECT_NEAR(lse, 12000.0f, 1e-2);
}

}  // namespace
}  // namespace kvasir

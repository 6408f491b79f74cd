// Task-KV and its baselines against brute-force references on random attention: the scores and
// semantic vectors (against the reference partial-attention kernel), pooling, top-k, the
// separator, and every policy's plan (sinks / recent / window always kept, budgets respected
// per head and per layer, the scored choices equal an exhaustive ranking).
#include "kvcache/eviction/retention.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <set>

#include "gtest/gtest.h"
#include "kernels/attention/paged_attention_ref.h"

namespace kvasir {
namespace {

struct RandomLayer {
  RandomLayer(int32_t H, int32_t KVH, int32_t d, int32_t n, int32_t w, uint32_t seed)
      : H(H), KVH(KVH), d(d), n(n), w(std::min(w, n)) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd;
    k.resize(static_cast<size_t>(KVH) * n * d);
    v.resize(k.size());
    q.resize(static_cast<size_t>(this->w) * H * d);
    for (auto& x : k) x = 1.5f * nd(rng);
    for (auto& x : v) x = nd(rng);
    for (auto& x : q) x = nd(rng);
  }
  const float* K(int32_t kh, int32_t t) const { return k.data() + (int64_t{kh} * n + t) * d; }
  const float* V(int32_t kh, int32_t t) const { return v.data() + (int64_t{kh} * n + t) * d; }
  KvRowReader Rows() const {
    return [this](int32_t kh, int32_t t, float* kr, float* vr) {
      std::copy(K(kh, t), K(kh, t) + d, kr);
      std::copy(V(kh, t), V(kh, t) + d, vr);
    };
  }
  std::vector<HeadObservation> Observe() const {
    return ObserveLayer(H, KVH, d, n, w, q.data(), int64_t{H} * d,
                        1.0f / std::sqrt(static_cast<float>(d)), Rows());
  }
  int32_t H, KVH, d, n, w;
  std::vector<float> k, v, q;
};

TEST(ObserveLayer, ScoresAndSemanticVectorsMatchTheReferenceKernel) {
  for (auto [H, KVH, n, win] : std::vector<std::array<int32_t, 4>>{
           {4, 2, 37, 8}, {8, 8, 5, 32}, {6, 1, 64, 16}, {4, 4, 1, 4}}) {
    const int32_t d = 8;
    RandomLayer L(H, KVH, d, n, win, 7 + n);
    auto obs = L.Observe();
    ASSERT_EQ(static_cast<int32_t>(obs.size()), KVH);
    const int32_t G = H / KVH;
    const float scale = 1.0f / std::sqrt(static_cast<float>(d));
    // The reference kernel over a pool laid out as one block per token.
    for (int32_t kh = 0; kh < KVH; ++kh) {
      std::vector<int32_t> table(n);
      std::iota(table.begin(), table.end(), 0);
      std::vector<double> want_scores(n, 0.0), want_sem(d, 0.0);
      for (int32_t i = 0; i < L.w; ++i) {
        const int32_t pos = n - L.w + i;
        PagedAttentionParams p;
        p.k_pool = L.K(kh, 0);
        p.v_pool = L.V(kh, 0);
        p.block_table = table.data();
        p.block_size = 1;
        p.head_dim = d;
        p.end = pos + 1;
        p.q = L.q.data() + (int64_t{i} * H + kh * G) * d;
        p.group = G;
        p.scale = scale;
        std::vector<float> o(G * d), lse(G);
        p.o = o.data();
        p.lse = lse.data();
        PagedPartialAttentionRef(p);
        for (int32_t g = 0; g < G; ++g) {
          for (int32_t j = 0; j < d; ++j) want_sem[j] += o[g * d + j] / (static_cast<double>(L.w) * G);
          const float* qr = p.q + g * d;
          for (int32_t t = 0; t <= pos; ++t) {
            double s = 0;
            for (int32_t j = 0; j < d; ++j) s += double{qr[j]} * L.K(kh, t)[j];
            want_scores[t] += std::exp(s * scale - lse[g]);
          }
        }
      }
      double total = 0;
      for (int32_t t = 0; t < n; ++t) {
        EXPECT_NEAR(obs[kh].scores[t], want_scores[t], 1e-4) << "kv head " << kh << " t " << t;
        total += obs[kh].scores[t];
      }
      EXPECT_NEAR(total, static_cast<double>(L.w) * G, 1e-3);  // every softmax sums to one
      for (int32_t j = 0; j < d; ++j) EXPECT_NEAR(obs[kh].semantic[j], want_sem[j], 1e-4);
    }
  }
}

TEST(AvgPool, EqualsTheClippedMeanOfEachWindow) {
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(0, 1);
  for (int32_t n : {1, 2, 6, 31}) {
    std::vector<float> x(n);
    for (auto& e : x) e = u(rng);
    for (int32_t kernel : {1, 3, 7}) {
      std::vector<float> got = AvgPool(x, kernel);
      for (int32_t i = 0; i < n; ++i) {
        double s = 0;
        int c = 0;
        for (int32_t j = i - kernel / 2; j <= i + kernel / 2; ++j) {
          if (j >= 0 && j < n) s += x[j], ++c;
        }
        EXPECT_NEAR(got[i], s / c, 1e-6) << n << " " << kernel << " " << i;
      }
    }
  }
}

TEST(TopKInRange, EqualsASortedRankingWithTiesToTheLowerIndex) {
  std::mt19937 rng(2);
  std::uniform_int_distribution<int> u(0, 5);  // many ties
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<float> x(40);
    for (auto& e : x) e = static_cast<float>(u(rng));
    const int32_t b = trial % 7, e = 40 - trial % 5, k = trial % 13;
    std::vector<int32_t> idx;
    for (int32_t i = b; i < e; ++i) idx.push_back(i);
    std::stable_sort(idx.begin(), idx.end(), [&](int32_t p, int32_t q) { return x[p] > x[q]; });
    idx.resize(std::min<size_t>(k, idx.size()));
    std::sort(idx.begin(), idx.end());
    EXPECT_EQ(TopKInRange(x, b, e, k), idx) << trial;
  }
  EXPECT_TRUE(TopKInRange(std::vector<float>{1, 2}, 1, 1, 3).empty());
}

TEST(HeterogeneousHeads, PicksTheHeadsFarthestFromTheCenter) {
  std::vector<HeadObservation> h(5);
  for (auto& o : h) o.semantic = {1.0f, 0.1f, 0.0f};
  h[1].semantic = {1.0f, 0.12f, 0.01f};
  h[3].semantic = {-0.2f, 1.0f, 0.3f};  // far
  h[4].semantic = {0.3f, 0.0f, 1.0f};   // far, less
  EXPECT_EQ(HeterogeneousHeads(h, 1), (std::vector<bool>{false, false, false, true, false}));
  EXPECT_EQ(HeterogeneousHeads(h, 2), (std::vector<bool>{false, false, false, true, true}));
  EXPECT_EQ(HeterogeneousHeads(h, 0), std::vector<bool>(5, false));
  // The scale of a vector does not matter (cosine distance).
  for (float& x : h[0].semantic) x *= 40.0f;
  EXPECT_EQ(HeterogeneousHeads(h, 1), (std::vector<bool>{false, false, false, true, false}));
}

// Properties every plan has, and the per-policy guarantees.
void CheckPlan(const KvPolicy& p, const std::vector<HeadRetention>& plan, int32_t n,
               int32_t KVH, const std::vector<HeadObservation>& obs) {
  const int32_t B = p.BudgetFor(n);
  int64_t total = 0;
  for (int32_t kh = 0; kh < KVH; ++kh) {
    const HeadRetention& r = plan[kh];
    SCOPED_TRACE(testing::Message() << KvPolicyName(p.kind) << " n " << n << " B " << B
                                    << " head " << kh);
    ASSERT_TRUE(std::is_sorted(r.keep.begin(), r.keep.end()));
    ASSERT_EQ(std::set<int32_t>(r.keep.begin(), r.keep.end()).size(), r.keep.size());
    ASSERT_TRUE(r.keep.empty() || (r.keep.front() >= 0 && r.keep.back() < n));
    total += r.keep.size();
    auto kept = [&](int32_t t) { return std::binary_search(r.keep.begin(), r.keep.end(), t); };
    if (!p.Compresses(n)) {
      EXPECT_EQ(static_cast<int32_t>(r.keep.size()), n);
      EXPECT_EQ(r.cap, -1);
      continue;
    }
    ASSERT_GE(r.pinned, 0);
    ASSERT_LE(r.pinned, static_cast<int32_t>(r.keep.size()));
    // The unpinned entries are the most recent tokens: a contiguous tail of the prompt.
    for (size_t i = r.pinned; i < r.keep.size(); ++i) {
      EXPECT_EQ(r.keep[i], n - static_cast<int32_t>(r.keep.size() - i));
    }
    switch (p.kind) {
      case KvPolicyKind::kStreaming:
        EXPECT_EQ(static_cast<int32_t>(r.keep.size()), B);
        for (int32_t t = 0; t < std::min(p.sink, B); ++t) EXPECT_TRUE(kept(t)) << t;
        break;
      case KvPolicyKind::kSnapKv: {
        EXPECT_EQ(static_cast<int32_t>(r.keep.size()), B);
        const int32_t w = std::min(p.window, B);
        for (int32_t t = n - w; t < n; ++t) EXPECT_TRUE(kept(t)) << t;
        // Exhaustive: the chosen ones are the top pooled scores before the window.
        std::vector<float> pooled = AvgPool(obs[kh].scores, p.pooling);
        std::vector<int32_t> rest;
        for (int32_t t = 0; t < n - w; ++t) rest.push_back(t);
        std::stable_sort(rest.begin(), rest.end(),
                         [&](int32_t a, int32_t b) { return pooled[a] > pooled[b]; });
        rest.resize(B - w);
        std::sort(rest.begin(), rest.end());
        EXPECT_EQ(std::vector<int32_t>(r.keep.begin(), r.keep.begin() + r.pinned), rest);
        break;
      }
      case KvPolicyKind::kAdaKv: {
        const int32_t w = std::min(p.window, B);
        for (int32_t t = n - w; t < n; ++t) EXPECT_TRUE(kept(t)) << t;
        break;
      }
      case KvPolicyKind::kTaskKv: {
        const int32_t b = static_cast<int32_t>(r.keep.size());
        for (int32_t t = 0; t < std::min(p.sink, b); ++t) EXPECT_TRUE(kept(t)) << t;
        const int32_t recent = std::min(p.recent, b - std::min(p.sink, b));
        for (int32_t t = n - recent; t < n; ++t) EXPECT_TRUE(kept(t)) << t;
        break;
      }
      case KvPolicyKind::kFull:
        break;
    }
  }
  if (p.Compresses(n)) {
    EXPECT_LE(total, int64_t{B} * KVH);
    if (p.kind == KvPolicyKind::kAdaKv) {
      EXPECT_EQ(total, int64_t{B} * KVH);
    }
  }
}

TEST(PlanLayerRetention, EveryPolicyKeepsItsGuaranteesOnRandomAttention) {
  int trial = 0;
  for (KvPolicyKind kind : {KvPolicyKind::kFull, KvPolicyKind::kStreaming, KvPolicyKind::kSnapKv,
                            KvPolicyKind::kAdaKv, KvPolicyKind::kTaskKv}) {
    for (int32_t n : {1, 9, 64, 257}) {
      for (double budget : {0.05, 0.2, 0.4, 0.6, 1.0}) {
        const int32_t KVH = 4, H = 8, d = 8;
        RandomLayer L(H, KVH, d, n, 16, 100 + trial++);
        std::vector<HeadObservation> obs = L.Observe();
        KvPolicy p;
        p.kind = kind;
        p.budget_fraction = budget;
        p.sink = 4;
        p.recent = 24;
        p.window = 16;
        p.pooling = 3;
        CheckPlan(p, PlanLayerRetention(p, KVH, n, obs), n, KVH, obs);
      }
    }
  }
}

// Task-KV's ordinary heads: sinks and the recent window each, and together the top pooled
// scores between them (brute force over every (head, token) pair).
void CheckOrdinaryHeads(const KvPolicy& p, const std::vector<HeadRetention>& plan,
                        const std::vector<HeadObservation>& obs, int32_t n, int32_t other) {
  std::vector<std::pair<float, std::pair<int32_t, int32_t>>> all;  // (score, (head, token))
  int32_t heads = 0;
  for (size_t kh = 0; kh < plan.size(); ++kh) {
    if (plan[kh].heterogeneous) continue;
    ++heads;
    std::vector<float> pooled = AvgPool(obs[kh].scores, p.pooling);
    for (int32_t t = p.sink; t < n - p.recent; ++t) {
      all.push_back({pooled[t], {static_cast<int32_t>(kh), t}});
    }
  }
  std::stable_sort(all.begin(), all.end(), [](const auto& a, const auto& b) {
    return a.first > b.first;
  });
  all.resize(static_cast<size_t>(heads) * (other - p.sink - p.recent));
  for (size_t kh = 0; kh < plan.size(); ++kh) {
    const HeadRetention& r = plan[kh];
    if (r.heterogeneous) continue;
    std::vector<int32_t> want;
    for (int32_t t = 0; t < p.sink; ++t) want.push_back(t);
    std::vector<int32_t> mid;
    for (const auto& [score, at] : all) {
      if (at.first == static_cast<int32_t>(kh)) mid.push_back(at.second);
    }
    std::sort(mid.begin(), mid.end());
    want.insert(want.end(), mid.begin(), mid.end());
    EXPECT_EQ(r.pinned, static_cast<int32_t>(want.size())) << kh;  // the recent ones slide
    for (int32_t t = n - p.recent; t < n; ++t) want.push_back(t);
    EXPECT_EQ(r.keep, want) << kh;
    EXPECT_EQ(r.cap, static_cast<int32_t>(want.size()));
  }
}

TEST(PlanLayerRetention, TaskKvKeepsTheHeterogeneousHeadWholeWhenItsShareAllows) {
  const int32_t n = 400, KVH = 4;
  RandomLayer L(8, KVH, 8, n, 32, 5);
  std::vector<HeadObservation> obs = L.Observe();
  KvPolicy p;
  p.kind = KvPolicyKind::kTaskKv;
  p.budget_fraction = 0.4;  // 160 a head, 640 a layer: one head whole (400), three share 240
  p.sink = 8;
  p.recent = 32;
  p.hetero_share = 1e6;  // the paper's rule: heterogeneous heads keep everything
  auto plan = PlanLayerRetention(p, KVH, n, obs);
  const std::vector<bool> hetero = HeterogeneousHeads(obs, 1);
  int64_t total = 0;
  for (int32_t kh = 0; kh < KVH; ++kh) {
    EXPECT_EQ(plan[kh].heterogeneous, hetero[kh]);
    if (hetero[kh]) {
      EXPECT_EQ(plan[kh].keep.size(), static_cast<size_t>(n));
      EXPECT_EQ(plan[kh].cap, -1);  // grows freely while decoding
    }
    total += plan[kh].keep.size();
  }
  EXPECT_EQ(total, 640);
  CheckOrdinaryHeads(p, plan, obs, n, 80);
}

TEST(PlanLayerRetention, TaskKvGivesTheHeterogeneousHeadItsShare) {
  const int32_t n = 1000, KVH = 4;
  RandomLayer L(8, KVH, 8, n, 32, 9);
  std::vector<HeadObservation> obs = L.Observe();
  KvPolicy p;
  p.kind = KvPolicyKind::kTaskKv;
  p.budget_fraction = 0.2;  // 200 a head, 800 a layer: the heterogeneous head 250, three 183
  p.sink = 8;
  p.recent = 32;
  ASSERT_EQ(p.hetero_share, 1.25);
  auto plan = PlanLayerRetention(p, KVH, n, obs);
  const std::vector<bool> hetero = HeterogeneousHeads(obs, 1);
  int64_t total = 0;
  for (int32_t kh = 0; kh < KVH; ++kh) {
    ASSERT_EQ(plan[kh].heterogeneous, hetero[kh]);
    if (hetero[kh]) {
      EXPECT_EQ(plan[kh].keep.size(), 250u);
      EXPECT_EQ(plan[kh].cap, 250);
      // Sinks, its own top middle tokens, the recent window.
      std::vector<int32_t> want = TopKInRange(AvgPool(obs[kh].scores, p.pooling), 8, n - 32,
                                              250 - 40);
      EXPECT_EQ(std::vector<int32_t>(plan[kh].keep.begin() + 8, plan[kh].keep.end() - 32), want);
    }
    total += plan[kh].keep.size();
  }
  EXPECT_EQ(total, 250 + 3 * 183);
  CheckOrdinaryHeads(p, plan, obs, n, 183);
}

TEST(KvPolicy, ParsingBudgetsAndValidation) {
  EXPECT_EQ(*ParseKvPolicyKind("taskkv"), KvPolicyKind::kTaskKv);
  EXPECT_FALSE(ParseKvPolicyKind("h2o").ok());
  KvPolicy p;
  p.kind = KvPolicyKind::kSnapKv;
  ASSERT_TRUE(SetKvBudget(0.4, &p).ok());
  EXPECT_EQ(p.BudgetFor(1000), 400);
  EXPECT_EQ(p.BudgetFor(1), 1);
  ASSERT_TRUE(SetKvBudget(300, &p).ok());
  EXPECT_EQ(p.BudgetFor(1000), 300);
  EXPECT_EQ(p.BudgetFor(200), 200);
  EXPECT_FALSE(p.Compresses(200));
  EXPECT_TRUE(p.Compresses(301));
  EXPECT_FALSE(SetKvBudget(0, &p).ok());
  EXPECT_FALSE(SetKvBudget(-1, &p).ok());
  EXPECT_FALSE(SetKvBudget(2.5, &p).ok());
  EXPECT_FALSE(SetKvBudget(std::nan(""), &p).ok());
  EXPECT_TRUE(ValidateKvPolicy(p).ok());
  p.pooling = 4;
  EXPECT_FALSE(ValidateKvPolicy(p).ok());
  p.pooling = 7;
  p.beta = 1.5;
  EXPECT_FALSE(ValidateKvPolicy(p).ok());
  p.beta = 0.3;
  p.hetero_share = 0.5;
  EXPECT_FALSE(ValidateKvPolicy(p).ok());
  KvPolicy full;
  EXPECT_FALSE(full.Compresses(100000));
}

TEST(KvPolicy, ResolveMergesRequestFieldsOverDefaults) {
  EXPECT_FALSE(ResolveKvPolicy(std::nullopt, std::nullopt, std::nullopt)->has_value());
  // A policy alone: the default budget; a budget alone: Task-KV's way.
  auto named = ResolveKvPolicy(std::nullopt, KvPolicyKind::kSnapKv, std::nullopt);
  ASSERT_TRUE(named.ok() && named->has_value());
  EXPECT_EQ((*named)->kind, KvPolicyKind::kSnapKv);
  EXPECT_EQ((*named)->budget_fraction, kDefaultKvBudget);
  auto budget = ResolveKvPolicy(std::nullopt, std::nullopt, 300);
  ASSERT_TRUE(budget.ok());
  EXPECT_EQ((*budget)->kind, KvPolicyKind::kTaskKv);
  EXPECT_EQ((*budget)->budget_tokens, 300);
  // Over compressing defaults: the request's policy keeps their budget, its budget their policy.
  KvPolicy d;
  d.kind = KvPolicyKind::kStreaming;
  d.budget_fraction = 0.5;
  d.sink = 8;
  auto kept = ResolveKvPolicy(d, KvPolicyKind::kAdaKv, std::nullopt);
  EXPECT_EQ((*kept)->kind, KvPolicyKind::kAdaKv);
  EXPECT_EQ((*kept)->budget_fraction, 0.5);
  EXPECT_EQ((*kept)->sink, 8);
  auto rebudget = ResolveKvPolicy(d, std::nullopt, 0.25);
  EXPECT_EQ((*rebudget)->kind, KvPolicyKind::kStreaming);
  EXPECT_EQ((*rebudget)->budget_fraction, 0.25);
  EXPECT_EQ((*ResolveKvPolicy(d, KvPolicyKind::kFull, std::nullopt))->kind, KvPolicyKind::kFull);
  EXPECT_EQ(ResolveKvPolicy(d, std::nullopt, 2.5).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvasir

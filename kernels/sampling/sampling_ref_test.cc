// CPU checks of the sampling reference (no device needed): the shared bit-exact arithmetic
// (Philox known answers, exp2, order keys, min-p threshold), the tie rules, and the kept
// distribution and the draws against an independent double computation.
#include "kernels/sampling/sampling_ref.h"

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/sampling/sampling_common.h"
#include "kernels/sampling/sampling_search.h"
#include "kernels/sampling/sampling_test_util.h"

namespace kvasir {
namespace {

namespace si = cuda::sampling_internal;
using cuda::SampleRowParams;

SampleRowParams Params(float temperature, int32_t top_k, float top_p, float min_p,
                       uint64_t seed = 1, uint64_t step = 0) {
  SampleRowParams p;
  p.temperature = temperature;
  p.top_k = top_k;
  p.top_p = top_p;
  p.min_p = min_p;
  p.seed = seed;
  p.step = step;
  return p;
}

// Token ids with nonzero weight.
std::set<int32_t> Kept(const std::vector<float>& logits, const SampleRowParams& p) {
  const std::vector<uint64_t> w = SampleWeightsRef(logits, p);
  std::set<int32_t> kept;
  for (size_t i = 0; i < w.size(); ++i) {
    if (w[i] != 0) kept.insert(static_cast<int32_t>(i));
  }
  return kept;
}

TEST(SamplingCommon, PhiloxKnownAnswers) {
  // Random123's kat_vectors: counter[4], key[2] -> output[4].
  struct Case {
    si::Philox4 ctr;
    uint32_t key[2];
    uint32_t want[4];
  };
  const Case cases[] = {
      {{{0, 0, 0, 0}}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
      {{{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}},
       {0xffffffff, 0xffffffff},
       {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
      {{{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}},
       {0xa4093822, 0x299f31d0},
       {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
  };
  for (const Case& c : cases) {
    const si::Philox4 out = si::Philox4x32_10(c.ctr, c.key[0], c.key[1]);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(out.v[i], c.want[i]) << "word " << i;
  }
}

TEST(SamplingCommon, DrawBitsAreUniformAndKeyed) {
  EXPECT_NE(si::DrawBits(1, 0), si::DrawBits(1, 1));
  EXPECT_NE(si::DrawBits(1, 0), si::DrawBits(2, 0));
  EXPECT_EQ(si::DrawBits(7, 9), si::DrawBits(7, 9));
  // Top bit and a low bit are fair coins over consecutive steps (5-sigma bounds).
  const int n = 100000;
  int top = 0, low = 0;
  for (int s = 0; s < n; ++s) {
    const uint64_t b = si::DrawBits(12345, s);
    top += static_cast<int>(b >> 63);
    low += static_cast<int>((b >> 5) & 1);
  }
  const double sd = std::sqrt(n * 0.25);
  EXPECT_LT(std::abs(top - n / 2), 5 * sd);
  EXPECT_LT(std::abs(low - n / 2), 5 * sd);
  // DrawTarget maps [0, 2^64) onto [0, mass).
  EXPECT_EQ(si::DrawTarget(0, 10), 0u);
  EXPECT_EQ(si::DrawTarget(~uint64_t{0}, 10), 9u);
  EXPECT_EQ(si::DrawTarget(uint64_t{1} << 63, 10), 5u);
}

TEST(SamplingCommon, Exp2NonPositiveIsAccurateAndExactAtIntegers) {
  EXPECT_EQ(si::Exp2NonPositive(0.0f), 1.0f);
  EXPECT_EQ(si::Exp2NonPositive(-0.0f), 1.0f);
  for (int n = 0; n <= 125; ++n) {
    EXPECT_EQ(si::Exp2NonPositive(static_cast<float>(-n)), std::ldexp(1.0f, -n)) << n;
  }
  EXPECT_EQ(si::Exp2NonPositive(-125.5f), 0.0f);
  EXPECT_EQ(si::Exp2NonPositive(-INFINITY), 0.0f);
  EXPECT_EQ(si::Exp2NonPositive(NAN), 0.0f);
  std::mt19937_64 rng(std::random_device{}());
  std::uniform_real_distribution<float> u(-125.0f, 0.0f);
  double worst = 0.0;
  for (int i = 0; i < 1000000; ++i) {
    const float y = i < 500000 ? u(rng) : u(rng) / 125.0f;  // half of them in [-1, 0]
    const double exact = std::exp2(static_cast<double>(y));
    worst = std::max(worst, std::abs(si::Exp2NonPositive(y) - exact) / exact);
  }
  EXPECT_LT(worst, 3e-7);
}

TEST(SamplingCommon, OrderKeyPreservesOrder) {
  std::mt19937_64 rng(std::random_device{}());
  std::vector<float> values = {-INFINITY, -FLT_MAX, -1.0f,   -FLT_MIN, -1e-45f,
                               0.0f,      1e-45f,   FLT_MIN, 1.0f,     FLT_MAX};
  std::normal_distribution<float> nd(0.0f, 100.0f);
  for (int i = 0; i < 1000; ++i) values.push_back(nd(rng));
  for (float a : values) {
    EXPECT_EQ(si::KeyToFloat(si::OrderKey(a)), a);
    EXPECT_GE(si::OrderKey(a), si::OrderKey(-INFINITY));
    for (int j = 0; j < 20; ++j) {
      const float b = values[rng() % values.size()];
      EXPECT_EQ(a < b, si::OrderKey(a) < si::OrderKey(b)) << a << " " << b;
      EXPECT_EQ(a == b, si::OrderKey(a) == si::OrderKey(b)) << a << " " << b;
    }
  }
  // Sanitize: NaN -> -inf, +inf -> FLT_MAX, -0 -> +0 (so that it ties with +0).
  EXPECT_EQ(si::Sanitize(NAN), -INFINITY);
  EXPECT_EQ(si::Sanitize(INFINITY), FLT_MAX);
  EXPECT_EQ(si::OrderKey(si::Sanitize(-0.0f)), si::OrderKey(0.0f));
}

TEST(SamplingCommon, MinPThresholdBracketsLog2) {
  EXPECT_EQ(si::MinPLogThreshold(0.0f), -INFINITY);
  EXPECT_EQ(si::MinPLogThreshold(NAN), -INFINITY);
  // min_p >= 1 keeps the tokens whose weight rounds to the top token's: y within ~2^-24.
  for (float min_p : {1.0f, 2.0f}) {
    const float l = si::MinPLogThreshold(min_p);
    EXPECT_LE(l, 0.0f);
    EXPECT_GT(l, -1e-6f);
    EXPECT_EQ(si::Exp2NonPositive(l), 1.0f);
  }
  for (float min_p : {1e-30f, 1e-6f, 0.001f, 0.05f, 0.1f, 0.3f, 0.5f, 0.9f, 0.999f}) {
    const float l = si::MinPLogThreshold(min_p);
    EXPECT_GE(si::Exp2NonPositive(l), min_p);
    // The next float below l already falls short.
    EXPECT_LT(si::Exp2NonPositive(std::nextafter(l, -INFINITY)), min_p);
    EXPECT_NEAR(l, std::log2(static_cast<double>(min_p)), 1e-5 * (1.0 + std::abs(l)));
  }
}

TEST(SamplingCommon, TopPTarget) {
  const uint64_t m = uint64_t{1} << 40;
  EXPECT_EQ(si::TopPTarget(0.0f, m), 1u);
  EXPECT_EQ(si::TopPTarget(-1.0f, m), 1u);
  EXPECT_EQ(si::TopPTarget(0.5f, 4 * m), static_cast<uint64_t>(std::ceil((0.5 - 1e-6) * 4 * m)));
  EXPECT_LE(si::TopPTarget(0.99999994f, ~uint64_t{0} >> 1), ~uint64_t{0} >> 1);
}

TEST(SampleRef, GreedyIsArgmaxLowestIdWithNanAndInf) {
  const std::vector<float> row = {1.0f, NAN, 3.0f, -INFINITY, 3.0f, 2.0f};
  for (float t : {0.0f, 1e-6f, -1.0f, NAN}) {
    const SampleRowResult r = SampleRowRef(row, Params(t, 2, 0.5f, 0.1f));
    EXPECT_EQ(r.token, 2);
    EXPECT_NEAR(r.logprob, sampling_test::LogSoftmaxDouble(row, 2), 1e-6);
  }
  const std::vector<float> with_inf = {1.0f, INFINITY, 3.0f, INFINITY};
  EXPECT_EQ(SampleRowRef(with_inf, Params(0.0f, -1, 1.0f, 0.0f)).token, 1);
  EXPECT_NEAR(SampleRowRef(with_inf, Params(0.0f, -1, 1.0f, 0.0f)).logprob, -std::log(2.0), 1e-6);
  // Sampling with +inf logits: only the +inf tokens carry weight.
  EXPECT_EQ(Kept(with_inf, Params(1.0f, -1, 1.0f, 0.0f)), (std::set<int32_t>{1, 3}));
  // Every logit -inf or NaN: token 0, logprob -inf, whatever the temperature.
  const std::vector<float> dead = {NAN, -INFINITY, NAN};
  for (float t : {0.0f, 1.0f}) {
    const SampleRowResult r = SampleRowRef(dead, Params(t, -1, 1.0f, 0.0f));
    EXPECT_EQ(r.token, 0);
    EXPECT_EQ(r.logprob, -INFINITY);
  }
  // Vocab 1.
  const std::vector<float> one = {0.25f};
  EXPECT_EQ(SampleRowRef(one, Params(1.0f, -1, 0.5f, 0.5f)).token, 0);
  EXPECT_EQ(SampleRowRef(one, Params(1.0f, -1, 0.5f, 0.5f)).logprob, 0.0f);
}

TEST(SampleRef, TieRulesKeepLowestIds) {
  const std::vector<float> flat(10, 0.5f);
  // Top-k cutting through ties keeps the lowest ids.
  EXPECT_EQ(Kept(flat, Params(1.0f, 3, 1.0f, 0.0f)), (std::set<int32_t>{0, 1, 2}));
  const std::vector<float> row = {1.0f, 2.0f, 2.0f, 2.0f, 0.0f};
  EXPECT_EQ(Kept(row, Params(1.0f, 2, 1.0f, 0.0f)), (std::set<int32_t>{1, 2}));
  EXPECT_EQ(Kept(row, Params(1.0f, 4, 1.0f, 0.0f)), (std::set<int32_t>{0, 1, 2, 3}));
  // Top-p cutting through ties: 4 equal tokens, half the mass -> the two lowest ids.
  const std::vector<float> four = {0.0f, 0.0f, 0.0f, 0.0f, -100.0f};
  EXPECT_EQ(Kept(four, Params(1.0f, -1, 0.5f, 0.0f)), (std::set<int32_t>{0, 1}));
  EXPECT_EQ(Kept(four, Params(1.0f, -1, 0.51f, 0.0f)), (std::set<int32_t>{0, 1, 2}));
  // Top-p 0 keeps the argmax alone (the lowest id among equal maxima).
  EXPECT_EQ(Kept(four, Params(1.0f, -1, 0.0f, 0.0f)), (std::set<int32_t>{0}));
  // Min-p keeps or drops all tokens of one logit together.
  const std::vector<float> mp = {1.0f, 1.0f, 0.0f, 1.0f};
  EXPECT_EQ(Kept(mp, Params(1.0f, -1, 1.0f, 0.9f)), (std::set<int32_t>{0, 1, 3}));
  EXPECT_EQ(Kept(mp, Params(1.0f, -1, 1.0f, 0.3f)), (std::set<int32_t>{0, 1, 2, 3}));
  // -0 and +0 tie: top-k 2 over {+0, -0, +0} keeps ids 0 and 1.
  const std::vector<float> zeros = {0.0f, -0.0f, 0.0f};
  EXPECT_EQ(Kept(zeros, Params(1.0f, 2, 1.0f, 0.0f)), (std::set<int32_t>{0, 1}));
}

TEST(SampleRef, TopPIsRelativeToTheTopKMass) {
  // Probabilities 4:3:2:1. Top-k 2 leaves 4/7, 3/7: top-p 0.5 keeps the first only, 0.6 both.
  const std::vector<float> row = {std::log(4.0f), std::log(3.0f), std::log(2.0f), 0.0f};
  EXPECT_EQ(Kept(row, Params(1.0f, 2, 0.5f, 0.0f)), (std::set<int32_t>{0}));
  EXPECT_EQ(Kept(row, Params(1.0f, 2, 0.6f, 0.0f)), (std::set<int32_t>{0, 1}));
  // Without top-k, 0.6 of 10 needs 4 + 3: the first two; 0.75 needs three.
  EXPECT_EQ(Kept(row, Params(1.0f, -1, 0.6f, 0.0f)), (std::set<int32_t>{0, 1}));
  EXPECT_EQ(Kept(row, Params(1.0f, -1, 0.75f, 0.0f)), (std::set<int32_t>{0, 1, 2}));
  // "0.4 + 0.3 reaches 0.7" despite rounding (Sampler's tolerance).
  EXPECT_EQ(Kept(row, Params(1.0f, -1, 0.7f, 0.0f)), (std::set<int32_t>{0, 1}));
  // Min-p is relative to p_max (p / p_max = 1, 0.75, 0.5, 0.25), and applies after top-p.
  EXPECT_EQ(Kept(row, Params(1.0f, -1, 1.0f, 0.45f)), (std::set<int32_t>{0, 1, 2}));
  EXPECT_EQ(Kept(row, Params(1.0f, -1, 1.0f, 0.6f)), (std::set<int32_t>{0, 1}));
  EXPECT_EQ(Kept(row, Params(1.0f, -1, 0.6f, 0.45f)), (std::set<int32_t>{0, 1}));
}

// The kept distribution equals the independent double computation on random rows and params
// (rows within 1e-4 of a filter boundary are skipped: rounding may move a token across).
TEST(SampleRef, DistributionMatchesDouble) {
  std::mt19937_64 rng(std::random_device{}());
  int checked = 0, skipped = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    const size_t vocabs[] = {1, 2, 7, 50, 300, 2000};
    const size_t vocab = vocabs[rng() % std::size(vocabs)];
    const auto kind = static_cast<sampling_test::RowKind>(
        rng() % static_cast<int>(sampling_test::RowKind::kCount));
    const std::vector<float> row = sampling_test::RandomRow(kind, vocab, rng);
    const SampleRowParams p = sampling_test::RandomParams(static_cast<int32_t>(vocab), rng);
    SCOPED_TRACE("trial " + std::to_string(trial) + " vocab " + std::to_string(vocab) + " kind " +
                 std::to_string(static_cast<int>(kind)) + " T " + std::to_string(p.temperature) +
                 " k " + std::to_string(p.top_k) + " p " + std::to_string(p.top_p) + " min_p " +
                 std::to_string(p.min_p));
    const sampling_test::Filtered want = sampling_test::FilteredDouble(row, p);
    const std::vector<uint64_t> w = SampleWeightsRef(row, p);
    const SampleRowResult got = SampleRowRef(row, p);
    const double lp = sampling_test::LogSoftmaxDouble(row, got.token);
    if (lp == -INFINITY) {
      EXPECT_EQ(got.logprob, -INFINITY);
    } else {
      EXPECT_NEAR(got.logprob, lp, 1e-5);
    }
    if (want.greedy) {
      EXPECT_TRUE(w.empty());
      EXPECT_EQ(got.token, sampling_test::ArgmaxDouble(row));
      continue;
    }
    ASSERT_EQ(w.size(), vocab);
    ASSERT_NE(w[got.token], 0u);
    if (want.margin < 1e-4) {
      ++skipped;
      continue;
    }
    ++checked;
    double total = 0.0;
    for (uint64_t x : w) total += static_cast<double>(x);
    for (size_t i = 0; i < vocab; ++i) {
      const double p_ref = w[i] / total;
      ASSERT_NEAR(p_ref, want.p[i], 1e-6 + 1e-5 * want.p[i]) << "token " << i;
      // Dropped by the filters in double -> dropped by the reference (the reference may also
      // drop tokens below 2^-40 of the top one, whose double probability is below 1e-12).
      if (want.p[i] == 0.0) {
        ASSERT_EQ(w[i], 0u) << "token " << i;
      }
      if (w[i] == 0) {
        ASSERT_LT(want.p[i], 1e-11) << "token " << i;
      }
    }
  }
  EXPECT_GT(checked, 1000);
  std::printf("checked %d sampled rows against double, skipped %d near a boundary\n", checked,
              skipped);
}

// The kernel's threshold searches (sampling_search.h), driven by a sequential histogram and pick
// instead of the kernel's block-wide ones, keep exactly the reference's weights: the search
// levels, the early exits, the tie counts and the cut combination are checked here without a
// device. Returns the number of histogram passes.
int KernelKeptWeights(const std::vector<float>& logits, const SampleRowParams& p,
                      std::vector<uint64_t>* kept) {
  const int32_t vocab = static_cast<int32_t>(logits.size());
  std::vector<float> v(vocab);
  float max = -INFINITY;
  for (int32_t i = 0; i < vocab; ++i) {
    v[i] = si::Sanitize(logits[i]);
    max = std::max(max, v[i]);
  }
  kept->clear();
  if (si::IsGreedy(p.temperature) || max == -INFINITY) return 0;
  const float scale = si::LogWeightScale(p.temperature);
  int passes = 0;
  // One histogram pass and pick, as the kernel's Histogram + PickBin do.
  auto pass = [&](const si::SearchLevel& level, bool by_mass, auto need_fn, uint64_t* total) {
    ++passes;
    std::vector<uint32_t> count(si::kSearchBins, 0);
    std::vector<uint64_t> mass(si::kSearchBins, 0);
    for (int32_t i = 0; i < vocab; ++i) {
      uint32_t d;
      float y;
      if (!si::LevelDigit(level, v[i], si::OrderKey(v[i]), max, scale, &d, &y)) continue;
      EXPECT_LT(d, static_cast<uint32_t>(si::kSearchBins));
      ++count[d];
      mass[d] += si::FixedWeight(y);
    }
    *total = std::accumulate(mass.begin(), mass.end(), uint64_t{0});
    const uint64_t need = need_fn(*total);
    si::BinPick pick;
    uint64_t run_count = 0, run_mass = 0;
    for (int b = si::kSearchBins - 1; b >= 0; --b) {
      const uint64_t before = by_mass ? run_mass : run_count;
      if (before < need && before + (by_mass ? mass[b] : count[b]) >= need) {
        pick.bin = b;
        pick.count_before = static_cast<uint32_t>(run_count);
        pick.mass_before = run_mass;
        pick.count = count[b];
        pick.mass = mass[b];
        break;
      }
      run_count += count[b];
      run_mass += mass[b];
    }
    return pick;
  };
  si::Cut cut = si::NoCut();
  uint64_t topk_mass = 0;
  if (si::TopKActive(p.top_k, vocab)) {
    si::TopKSearch s;
    s.k = static_cast<uint32_t>(p.top_k);
    for (int i = 0; i < si::kMaxSearchLevels && !s.done; ++i) {
      uint64_t total;
      const uint64_t need = s.Need();
      const si::BinPick pick = pass(
          s.level, false, [need](uint64_t) { return need; }, &total);
      s.Step(pick, total, max, scale);
    }
    EXPECT_TRUE(s.done);
    cut = s.cut;
    topk_mass = s.kept_mass;
  }
  if (si::TopPActive(p.top_p)) {
    si::TopPSearch s;
    s.Start(p.top_p, topk_mass);
    for (int i = 0; i < si::kMaxSearchLevels && !s.done; ++i) {
      uint64_t total;
      const si::BinPick pick = pass(
          s.level, true, [&s](uint64_t t) { return s.Need(t); }, &total);
      s.Step(pick, max, scale);
    }
    EXPECT_TRUE(s.done);
    cut = si::Shorter(cut, s.cut);
  }
  const float min_y = si::MinPLogThreshold(p.min_p);
  kept->assign(vocab, 0);
  uint32_t rank = 0;
  for (int32_t i = 0; i < vocab; ++i) {
    const uint32_t key = si::OrderKey(v[i]);
    (*kept)[i] = si::CutWeight(key, si::LogWeight(v[i], max, scale), cut, rank, min_y);
    rank += key == cut.key;
  }
  return passes;
}

TEST(SampleRef, KernelSearchKeepsTheReferenceWeights) {
  std::mt19937_64 rng(std::random_device{}());
  int rows = 0, max_passes = 0;
  for (int trial = 0; trial < 6000; ++trial) {
    const size_t vocabs[] = {1, 2, 3, 7, 50, 129, 1000, 4099, 32000};
    const size_t vocab = vocabs[rng() % (trial % 20 == 0 ? 9 : 8)];
    const auto kind = static_cast<sampling_test::RowKind>(
        rng() % static_cast<int>(sampling_test::RowKind::kCount));
    const std::vector<float> row = sampling_test::RandomRow(kind, vocab, rng);
    SampleRowParams p = sampling_test::RandomParams(static_cast<int32_t>(vocab), rng);
    if (rng() % 3 == 0) p.top_k = 1 + static_cast<int32_t>(rng() % vocab);
    if (rng() % 3 == 0) p.top_p = static_cast<float>(rng() % 1000) / 1000.0f;
    SCOPED_TRACE("trial " + std::to_string(trial) + " vocab " + std::to_string(vocab) + " kind " +
                 std::to_string(static_cast<int>(kind)) + " T " + std::to_string(p.temperature) +
                 " k " + std::to_string(p.top_k) + " p " + std::to_string(p.top_p) + " min_p " +
                 std::to_string(p.min_p));
    std::vector<uint64_t> got;
    const int passes = KernelKeptWeights(row, p, &got);
    max_passes = std::max(max_passes, passes);
    ASSERT_EQ(got, SampleWeightsRef(row, p));
    rows += !got.empty();
  }
  EXPECT_GT(rows, 3000);
  // At most 4 levels each for top-k and top-p.
  EXPECT_LE(max_passes, 2 * si::kMaxSearchLevels);
}

// 20000 draws (steps 0 .. 19999) follow the double distribution; nothing outside it appears.
TEST(SampleRef, DrawsFollowTheFilteredDistribution) {
  std::mt19937_64 rng(std::random_device{}());
  const SampleRowParams configs[] = {Params(0.8f, 20, 0.9f, 0.02f), Params(1.3f, -1, 0.7f, 0.0f),
                                     Params(0.5f, 10, 1.0f, 0.1f),  Params(1.0f, -1, 1.0f, 0.0f),
                                     Params(2.0f, 40, 0.95f, 0.0f), Params(1.0f, 5, 1.0f, 0.0f)};
  const int vocab = 50;
  const int64_t n = 20000;
  for (SampleRowParams p : configs) {
    SCOPED_TRACE("T " + std::to_string(p.temperature) + " k " + std::to_string(p.top_k) + " p " +
                 std::to_string(p.top_p) + " min_p " + std::to_string(p.min_p));
    std::vector<float> row;
    sampling_test::Filtered want;
    do {  // avoid rows that sit on a filter boundary
      std::normal_distribution<float> nd(0.0f, 1.5f);
      row.assign(vocab, 0.0f);
      for (float& x : row) x = nd(rng);
      want = sampling_test::FilteredDouble(row, p);
    } while (want.margin < 1e-3);
    p.seed = rng();
    std::vector<int64_t> counts(vocab, 0);
    for (int64_t s = 0; s < n; ++s) {
      p.step = static_cast<uint64_t>(s);
      ++counts[SampleRowRef(row, p).token];
    }
    const std::string err = sampling_test::CheckFrequencies(counts, want.p, n);
    EXPECT_EQ(err, "");
  }
}

TEST(SampleRef, SameSeedAndStepSameToken) {
  std::mt19937_64 rng(std::random_device{}());
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> row(1000);
  for (float& x : row) x = nd(rng);
  const SampleRowParams p = Params(1.0f, -1, 1.0f, 0.0f, rng(), 17);
  const int32_t t = SampleRowRef(row, p).token;
  for (int i = 0; i < 5; ++i) EXPECT_EQ(SampleRowRef(row, p).token, t);
  std::set<int32_t> seen;
  for (uint64_t step = 0; step < 50; ++step) {
    seen.insert(SampleRowRef(row, Params(1.0f, -1, 1.0f, 0.0f, p.seed, step)).token);
  }
  EXPECT_GT(seen.size(), 10u);  // 1000 roughly flat tokens: 50 draws are nearly all distinct
}

TEST(SampleRef, BatchMatchesRows) {
  std::mt19937_64 rng(std::random_device{}());
  const int32_t rows = 9, vocab = 37;
  const int64_t stride = 41;
  std::vector<float> logits(rows * stride, NAN);  // the gaps must not be read
  std::vector<SampleRowParams> params(rows);
  for (int32_t r = 0; r < rows; ++r) {
    const std::vector<float> row =
        sampling_test::RandomRow(sampling_test::RowKind::kNormal, vocab, rng);
    std::copy(row.begin(), row.end(), logits.begin() + r * stride);
    params[r] = sampling_test::RandomParams(vocab, rng);
  }
  std::vector<int32_t> tokens(rows, -1);
  std::vector<float> logprobs(rows, NAN);
  cuda::SampleParams sp;
  sp.logits = logits.data();
  sp.logits_stride = stride;
  sp.rows = rows;
  sp.vocab = vocab;
  sp.params = params.data();
  sp.out_tokens = tokens.data();
  sp.out_logprobs = logprobs.data();
  SampleRef(sp);
  for (int32_t r = 0; r < rows; ++r) {
    const SampleRowResult want =
        SampleRowRef(std::span<const float>(logits.data() + r * stride, vocab), params[r]);
    EXPECT_EQ(tokens[r], want.token);
    EXPECT_EQ(logprobs[r], want.logprob);
  }
}

}  // namespace
}  // namespace kvasir

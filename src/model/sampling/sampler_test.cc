#include "model/sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/sampling/internal/fast_exp.h"
#include "model/sampling/sampling_params.h"

namespace kvasir {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kSeed = 1234;
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

SamplingParams Greedy() {
  SamplingParams p;
  p.temperature = 0.0f;
  return p;
}

SamplingParams Seeded(float temperature = 1.0f) {
  SamplingParams p;
  p.temperature = temperature;
  p.seed = kSeed;
  return p;
}

// Direct log-softmax in double: the reference for raw logprobs.
std::vector<double> LogSoftmax(const std::vector<float>& logits, double temperature = 1.0) {
  double mx = -std::numeric_limits<double>::infinity();
  for (float v : logits) mx = std::max(mx, v / temperature);
  double sum = 0.0;
  for (float v : logits) sum += std::exp(v / temperature - mx);
  std::vector<double> out;
  for (float v : logits) out.push_back(v / temperature - mx - std::log(sum));
  return out;
}

std::vector<double> Softmax(const std::vector<float>& logits, double temperature = 1.0) {
  std::vector<double> out = LogSoftmax(logits, temperature);
  for (double& v : out) v = std::exp(v);
  return out;
}

// Logits whose softmax is exactly `probs` up to float rounding.
std::vector<float> LogitsFor(const std::vector<double>& probs) {
  std::vector<float> out;
  for (double p : probs) {
    out.push_back(p > 0 ? static_cast<float>(std::log(p)) : -kInf);
  }
  return out;
}

std::vector<int> Counts(Sampler& sampler, const std::vector<float>& logits, int draws) {
  std::vector<int> counts(logits.size(), 0);
  for (int i = 0; i < draws; ++i) ++counts[sampler.Sample(logits).token];
  return counts;
}

// Every bin within 4 sigma of its expectation, zero-probability bins never drawn, and the
// chi-square statistic under the 99.99% quantile for its degrees of freedom (<= 6 here).
void ExpectMatches(const std::vector<int>& counts, const std::vector<double>& probs) {
  ASSERT_EQ(counts.size(), probs.size());
  const int n = std::accumulate(counts.begin(), counts.end(), 0);
  double chi2 = 0.0;
  int bins = 0;
  for (size_t i = 0; i < probs.size(); ++i) {
    if (probs[i] == 0.0) {
      EXPECT_EQ(counts[i], 0) << "token " << i << " has probability 0";
      continue;
    }
    const double expected = n * probs[i];
    const double sigma = std::sqrt(n * probs[i] * (1.0 - probs[i]));
    EXPECT_NEAR(counts[i], expected, 4.0 * sigma + 1.0) << "token " << i;
    chi2 += (counts[i] - expected) * (counts[i] - expected) / expected;
    ++bins;
  }
  ASSERT_GE(bins, 1);
  ASSERT_LE(bins, 7);
  // 99.99% quantiles of chi-square with 0..6 degrees of freedom.
  constexpr double kChi2Quantile[] = {1e-9, 15.14, 18.42, 21.11, 23.51, 25.74, 27.86};
  EXPECT_LT(chi2, kChi2Quantile[bins - 1]);
}

std::vector<double> Renormalized(std::vector<double> probs, const std::vector<int>& keep) {
  std::vector<double> out(probs.size(), 0.0);
  double total = 0.0;
  for (int id : keep) total += probs[id];
  for (int id : keep) out[id] = probs[id] / total;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Fast exp

TEST(FastExpTest, MatchesStdExp) {
  double max_rel = 0.0;
  for (float x = -87.0f; x <= 0.0f; x += 0.00173f) {
    const double want = std::exp(static_cast<double>(x));
    max_rel = std::max(max_rel, std::abs(internal::ExpNonPositive(x) - want) / want);
  }
  EXPECT_LT(max_rel, 2e-7);
  EXPECT_EQ(internal::ExpNonPositive(0.0f), 1.0f);
  EXPECT_EQ(internal::ExpNonPositive(-kInf), 0.0f);
  EXPECT_EQ(internal::ExpNonPositive(-100.0f), 0.0f);
  EXPECT_EQ(internal::ExpNonPositive(-3e38f), 0.0f);
  EXPECT_TRUE(std::isnan(internal::ExpNonPositive(kNaN)));
}

// ---------------------------------------------------------------------------------------------
// Greedy

TEST(SamplerTest, GreedyPicksArgmax) {
  const std::vector<float> logits = {0.1f, 2.5f, -1.0f, 2.4f};
  Sampler sampler(Greedy(), {});
  const SampleResult r = sampler.Sample(logits);
  EXPECT_EQ(r.token, 1);
  EXPECT_NEAR(r.logprob, LogSoftmax(logits)[1], 1e-5);
  EXPECT_TRUE(r.top.empty());
  EXPECT_EQ(sampler.generated(), std::vector<int32_t>{1});
}

TEST(SamplerTest, GreedyTiesGoToLowestId) {
  Sampler sampler(Greedy(), {});
  EXPECT_EQ(sampler.Sample(std::vector<float>{1.0f, 3.0f, 3.0f, 0.0f}).token, 1);
  EXPECT_EQ(sampler.Sample(std::vector<float>{-2.0f, -2.0f}).token, 0);
  EXPECT_EQ(sampler.Sample(std::vector<float>{-kInf, -kInf, -kInf}).token, 0);
}

TEST(SamplerTest, GreedyIgnoresSeedAndTruncation) {
  const std::vector<float> logits = {0.3f, 0.2f, 0.9f, 0.85f, -4.0f};
  for (uint64_t seed : {1u, 2u, 99u}) {
    SamplingParams p = Greedy();
    p.seed = seed;
    p.top_k = 3;
    p.top_p = 0.5f;
    p.min_p = 0.2f;
    Sampler sampler(p, {});
    for (int i = 0; i < 20; ++i) EXPECT_EQ(sampler.Sample(logits).token, 2);
  }
  // Below vLLM's epsilon counts as greedy too.
  SamplingParams tiny = Seeded(1e-6f);
  Sampler sampler(tiny, {});
  for (int i = 0; i < 20; ++i) EXPECT_EQ(sampler.Sample(logits).token, 2);
}

TEST(SamplerTest, NanLogitsAreNeverSampled) {
  const std::vector<float> logits = {kNaN, 1.0f, 0.5f, kNaN, kInf * 0.0f};
  Sampler greedy(Greedy(), {});
  EXPECT_EQ(greedy.Sample(logits).token, 1);
  Sampler sampler(Seeded(), {});
  const std::vector<int> counts = Counts(sampler, logits, 2000);
  EXPECT_EQ(counts[0], 0);
  EXPECT_EQ(counts[3], 0);
  EXPECT_EQ(counts[4], 0);
  EXPECT_GT(counts[1], counts[2]);
  EXPECT_GT(counts[2], 0);
}

// ---------------------------------------------------------------------------------------------
// Seeds

std::vector<float> SomeLogits(int vocab, uint64_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> logits(vocab);
  for (float& v : logits) v = normal(gen);
  return logits;
}

std::vector<int32_t> Draw(SamplingParams p, const std::vector<float>& logits, int n) {
  Sampler sampler(p, {});
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) out.push_back(sampler.Sample(logits).token);
  return out;
}

TEST(SamplerTest, SameSeedSameSequence) {
  std::vector<float> logits = SomeLogits(50, 7);
  for (float& v : logits) v *= 0.3f;  // flat enough that many tokens get drawn
  SamplingParams p = Seeded(0.9f);
  p.top_k = 40;
  p.top_p = 0.95f;
  p.min_p = 0.01f;
  const std::vector<int32_t> a = Draw(p, logits, 200);
  const std::vector<int32_t> b = Draw(p, logits, 200);
  EXPECT_EQ(a, b);
  // The draws really are random (not all the argmax).
  EXPECT_GT(std::set<int32_t>(a.begin(), a.end()).size(), 5u);

  p.seed = kSeed + 1;
  EXPECT_NE(Draw(p, logits, 200), a);
  // Without a seed each sampler seeds itself from a random device.
  p.seed.reset();
  EXPECT_NE(Draw(p, logits, 200), Draw(p, logits, 200));
}

// A migrated stream: a sampler resumed after k tokens of another one continues it exactly,
// penalties (which count generated tokens) included.
TEST(SamplerTest, ResumeContinuesAnotherSamplersStream) {
  std::vector<std::vector<float>> steps;
  for (int i = 0; i < 60; ++i) {
    std::vector<float> l = SomeLogits(50, 100 + i);
    for (float& v : l) v *= 0.3f;
    steps.push_back(l);
  }
  for (float temperature : {0.0f, 0.9f}) {
    SamplingParams p = Seeded(temperature);
    p.top_k = 30;
    p.repetition_penalty = 1.3f;
    p.frequency_penalty = 0.4f;
    const std::vector<int32_t> prompt = {1, 2, 3};
    Sampler whole(p, prompt);
    std::vector<int32_t> all;
    for (const auto& l : steps) all.push_back(whole.Sample(l).token);
    for (int k : {1, 17, 59}) {
      Sampler resumed(p, prompt);
      resumed.Resume(std::vector<int32_t>(all.begin(), all.begin() + k));
      for (int i = k; i < 60; ++i) {
        ASSERT_EQ(resumed.Sample(steps[i]).token, all[i]) << "t " << temperature << " k " << k;
      }
      EXPECT_EQ(resumed.generated(), all);
    }
  }
}

TEST(SamplerTest, SeededDrawsArePinned) {
  // Pins the RNG recipe (mt19937_64, top 53 bits, inverse CDF in id order): a change here
  // changes every seeded completion users have recorded.
  const std::vector<float> logits = {0.0f, 0.0f, 0.0f, 0.0f};  // uniform: token = floor(4 u)
  std::mt19937_64 rng(kSeed);
  std::vector<int32_t> expected;
  for (int i = 0; i < 50; ++i) {
    const double u = static_cast<double>(rng() >> 11) * 0x1.0p-53;
    expected.push_back(static_cast<int32_t>(u * 4.0));
  }
  EXPECT_EQ(Draw(Seeded(), logits, 50), expected);
}

// ---------------------------------------------------------------------------------------------
// Distribution

constexpr int kDraws = 20000;

TEST(SamplerTest, FrequenciesMatchSoftmaxWithTemperature) {
  const std::vector<float> logits = {1.0f, 0.5f, 0.0f, -0.5f, -1.0f, 2.0f};
  for (float t : {1.0f, 0.7f, 1.8f}) {
    SCOPED_TRACE(t);
    Sampler sampler(Seeded(t), {});
    ExpectMatches(Counts(sampler, logits, kDraws), Softmax(logits, t));
  }
}

TEST(SamplerTest, TopKSamplesOnlyTheKBestRenormalized) {
  const std::vector<float> logits = {0.2f, 1.5f, -0.3f, 1.1f, 0.9f, 0.0f};
  SamplingParams p = Seeded();
  p.top_k = 3;
  Sampler sampler(p, {});
  ExpectMatches(Counts(sampler, logits, kDraws), Renormalized(Softmax(logits), {1, 3, 4}));

  // top_k >= vocab and -1 are off.
  for (int32_t k : {6, 100, -1}) {
    p.top_k = k;
    Sampler all(p, {});
    ExpectMatches(Counts(all, logits, kDraws), Softmax(logits));
  }
}

TEST(SamplerTest, TopKTiesKeepLowestIds) {
  const std::vector<float> logits = {0.0f, 1.0f, 1.0f, 1.0f, 1.0f};
  SamplingParams p = Seeded();
  p.top_k = 2;
  Sampler sampler(p, {});
  ExpectMatches(Counts(sampler, logits, kDraws), {0.0, 0.5, 0.5, 0.0, 0.0});
}

TEST(SamplerTest, LargeTopKTiesKeepLowestIds) {
  // Above the heap size: the nth_element path. 600 equal logits, k = 300.
  const std::vector<float> logits(600, 0.5f);
  SamplingParams p = Seeded();
  p.top_k = 300;
  Sampler sampler(p, {});
  int32_t max_token = 0;
  for (int i = 0; i < 3000; ++i) {
    const int32_t token = sampler.Sample(logits).token;
    ASSERT_LT(token, 300);
    max_token = std::max(max_token, token);
  }
  EXPECT_GT(max_token, 280);
}

TEST(SamplerTest, LargeTopKMatchesRenormalizedSoftmax) {
  // k = 297 of 300: the three worst tokens are never drawn; the rest is checked in bins.
  std::vector<float> logits(300);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = 0.01f * static_cast<float>((i * 37) % 300);
  SamplingParams p = Seeded();
  p.top_k = 297;
  Sampler sampler(p, {});
  const std::vector<int> counts = Counts(sampler, logits, kDraws);
  std::vector<double> probs = Softmax(logits);
  double dropped = 0.0;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (logits[i] < 0.025f) {  // 0.00, 0.01, 0.02
      EXPECT_EQ(counts[i], 0) << i;
      dropped += probs[i];
      probs[i] = 0.0;
    }
  }
  // Six bins by logit range.
  std::vector<int> binned(6, 0);
  std::vector<double> binned_probs(6, 0.0);
  for (size_t i = 0; i < logits.size(); ++i) {
    const size_t bin = std::min<size_t>(5, static_cast<size_t>(logits[i] / 0.5f));
    binned[bin] += counts[i];
    binned_probs[bin] += probs[i] / (1.0 - dropped);
  }
  ExpectMatches(binned, binned_probs);
}

TEST(SamplerTest, TopKOnLargeVocab) {
  const std::vector<float> logits = SomeLogits(128000, 3);
  std::vector<int32_t> ids(logits.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::partial_sort(ids.begin(), ids.begin() + 5, ids.end(),
                    [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  const std::set<int32_t> best(ids.begin(), ids.begin() + 5);
  SamplingParams p = Seeded();
  p.top_k = 5;
  Sampler sampler(p, {});
  std::set<int32_t> seen;
  for (int i = 0; i < 500; ++i) {
    const int32_t token = sampler.Sample(logits).token;
    EXPECT_TRUE(best.count(token)) << token;
    seen.insert(token);
  }
  EXPECT_EQ(seen, best);
}

TEST(SamplerTest, TopPBoundaryIsExact) {
  // Ids shuffled so that the order comes from sorting, not from the ids.
  const std::vector<double> probs = {0.3, 0.2, 0.5};
  const std::vector<float> logits = LogitsFor(probs);
  SamplingParams p = Seeded();

  p.top_p = 0.8f;  // 0.5 + 0.3 reaches 0.8: two tokens
  Sampler two(p, {});
  ExpectMatches(Counts(two, logits, kDraws), Renormalized(probs, {2, 0}));

  p.top_p = 0.81f;  // needs the third
  Sampler three(p, {});
  ExpectMatches(Counts(three, logits, kDraws), probs);

  p.top_p = 0.5f;  // the best token alone reaches it
  Sampler one(p, {});
  ExpectMatches(Counts(one, logits, 2000), {0.0, 0.0, 1.0});

  p.top_p = 0.51f;
  Sampler two_again(p, {});
  ExpectMatches(Counts(two_again, logits, kDraws), Renormalized(probs, {2, 0}));
}

TEST(SamplerTest, TopPOnLargeUniformVocabKeepsExactlyHalf) {
  // 5000 equal logits with top_p 0.5: the nucleus is 2500 tokens, the lowest ids among equals.
  // Large enough that the incremental sort grows several times.
  const std::vector<float> logits(5000, 0.25f);
  SamplingParams p = Seeded();
  p.top_p = 0.5f;
  Sampler sampler(p, {});
  int32_t max_token = 0;
  for (int i = 0; i < 4000; ++i) {
    const int32_t token = sampler.Sample(logits).token;
    ASSERT_LT(token, 2500);
    max_token = std::max(max_token, token);
  }
  EXPECT_GT(max_token, 2450);
}

TEST(SamplerTest, TopPAppliesAfterTopKRenormalization) {
  // After top-k 3 the probabilities are 0.444, 0.333, 0.222, so top_p 0.75 keeps two tokens;
  // on the unrenormalized distribution 0.4 + 0.3 = 0.7 would need a third.
  const std::vector<double> probs = {0.1, 0.4, 0.2, 0.3};
  SamplingParams p = Seeded();
  p.top_k = 3;
  p.top_p = 0.75f;
  Sampler sampler(p, {});
  ExpectMatches(Counts(sampler, LogitsFor(probs), kDraws), Renormalized(probs, {1, 3}));
}

TEST(SamplerTest, MinPDropsTokensBelowFractionOfMax) {
  const std::vector<double> probs = {0.5, 0.2, 0.04, 0.26};
  const std::vector<float> logits = LogitsFor(probs);
  SamplingParams p = Seeded();
  p.min_p = 0.1f;  // threshold 0.05: drops 0.04
  Sampler sampler(p, {});
  ExpectMatches(Counts(sampler, logits, kDraws), Renormalized(probs, {0, 1, 3}));

  p.min_p = 0.5f;  // threshold 0.25: keeps 0.5 and 0.26
  Sampler strict(p, {});
  ExpectMatches(Counts(strict, logits, kDraws), Renormalized(probs, {0, 3}));

  p.min_p = 1.0f;  // only the max
  Sampler only_max(p, {});
  ExpectMatches(Counts(only_max, logits, 2000), {1.0, 0.0, 0.0, 0.0});
}

TEST(SamplerTest, MinPIsRelativeToTemperatureScaledDistribution) {
  // T = 2 flattens {0.5, 0.2, 0.04, 0.26}: p / p_max becomes sqrt of the original ratio, so
  // 0.04 / 0.5 = 0.08 -> 0.283 survives min_p 0.25, while 0.2 / 0.5 = 0.4 -> 0.632 does too.
  const std::vector<double> probs = {0.5, 0.2, 0.04, 0.26};
  const std::vector<float> logits = LogitsFor(probs);
  SamplingParams p = Seeded(2.0f);
  p.min_p = 0.25f;
  Sampler sampler(p, {});
  ExpectMatches(Counts(sampler, logits, kDraws), Softmax(logits, 2.0));
  p.min_p = 0.3f;  // now 0.283 < 0.3 drops token 2
  Sampler strict(p, {});
  ExpectMatches(Counts(strict, logits, kDraws), Renormalized(Softmax(logits, 2.0), {0, 1, 3}));
}

// ---------------------------------------------------------------------------------------------
// Penalties

TEST(SamplerTest, RepetitionPenaltyDividesPositiveLogits) {
  // Token 0 is in the prompt: 2.0 / p against token 1's 1.6.
  const std::vector<float> logits = {2.0f, 1.6f, -3.0f};
  SamplingParams p = Greedy();
  p.repetition_penalty = 1.2f;  // 1.667 > 1.6
  EXPECT_EQ(Sampler(p, {0}).Sample(logits).token, 0);
  p.repetition_penalty = 1.25f;  // exactly 1.6: tie, lowest id
  EXPECT_EQ(Sampler(p, {0}).Sample(logits).token, 0);
  p.repetition_penalty = 1.26f;  // 1.587 < 1.6
  EXPECT_EQ(Sampler(p, {0, 0, 2}).Sample(logits).token, 1);
  // Tokens not in the prompt are untouched; a penalty < 1 raises seen tokens.
  p.repetition_penalty = 0.5f;
  EXPECT_EQ(Sampler(p, {1}).Sample(logits).token, 1);  // 1.6 / 0.5 = 3.2
}

TEST(SamplerTest, RepetitionPenaltyMultipliesNegativeLogits) {
  const std::vector<float> logits = {-1.0f, -1.2f};
  SamplingParams p = Greedy();
  p.repetition_penalty = 1.1f;  // -1.1 > -1.2
  EXPECT_EQ(Sampler(p, {0}).Sample(logits).token, 0);
  p.repetition_penalty = 1.3f;  // -1.3 < -1.2
  EXPECT_EQ(Sampler(p, {0}).Sample(logits).token, 1);
  // Dividing a negative logit would have made it larger (-0.77) and kept token 0.
}

TEST(SamplerTest, RepetitionPenaltyCoversGeneratedTokens) {
  const std::vector<float> logits = {1.0f, 0.9f, 0.1f};
  SamplingParams p = Greedy();
  p.repetition_penalty = 1.2f;
  Sampler sampler(p, {});
  // 0; then 1.0 / 1.2 = 0.833 < 0.9 -> 1; then 0.833 vs 0.75 -> 0; no compounding -> 0 again.
  for (int32_t expected : {0, 1, 0, 0}) EXPECT_EQ(sampler.Sample(logits).token, expected);
}

TEST(SamplerTest, FrequencyPenaltyGrowsWithCount) {
  const std::vector<float> logits = {1.0f, 0.0f};
  SamplingParams p = Greedy();
  p.frequency_penalty = 0.3f;
  Sampler sampler(p, {0, 0, 0});  // the prompt does not count
  // Token 0 after n draws: 1 - 0.3 n = 1, 0.7, 0.4, 0.1, -0.2 (< 0) -> token 1; then
  // token 1 is at -0.3 < -0.2 -> token 0.
  for (int32_t expected : {0, 0, 0, 0, 1, 0}) EXPECT_EQ(sampler.Sample(logits).token, expected);
}

TEST(SamplerTest, PresencePenaltyIsFlat) {
  const std::vector<float> logits = {1.0f, 0.5f};
  SamplingParams p = Greedy();
  p.presence_penalty = 0.6f;
  Sampler sampler(p, {0});  // the prompt does not count
  // 1.0 -> 0; 0.4 < 0.5 -> 1; 0.4 > -0.1 -> 0; still 0.4 (no growth) -> 0.
  for (int32_t expected : {0, 1, 0, 0}) EXPECT_EQ(sampler.Sample(logits).token, expected);

  p.presence_penalty = -0.6f;  // negative encourages repeating
  Sampler repeat(p, {});
  const std::vector<float> close = {0.5f, 1.0f};
  for (int32_t expected : {1, 1, 1}) EXPECT_EQ(repeat.Sample(close).token, expected);
}

TEST(SamplerTest, PenaltiesShiftTheSampledDistribution) {
  // Random sampling sees the penalized logits too: with token 0 in the prompt and penalty 2,
  // logits {2, 1, 0} become {1, 1, 0}.
  const std::vector<float> logits = {2.0f, 1.0f, 0.0f};
  SamplingParams p = Seeded();
  p.repetition_penalty = 2.0f;
  // One sampler per draw so that generated tokens do not add penalties.
  std::vector<int> counts(3, 0);
  for (int i = 0; i < kDraws; ++i) {
    p.seed = kSeed + i;
    ++counts[Sampler(p, {0}).Sample(logits).token];
  }
  ExpectMatches(counts, Softmax({1.0f, 1.0f, 0.0f}));
}

// ---------------------------------------------------------------------------------------------
// Logprobs

TEST(SamplerTest, LogprobsAreRawLogSoftmax) {
  std::vector<float> logits = SomeLogits(100, 11);
  logits[17] = logits[42] = 9.0f;  // a tie at the top: lower id first
  const std::vector<double> ref = LogSoftmax(logits);
  SamplingParams p = Seeded(0.7f);
  p.logprobs = 5;
  p.top_k = 10;
  p.repetition_penalty = 1.5f;
  p.frequency_penalty = 0.5f;
  Sampler sampler(p, {17, 3, 4});
  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  for (int step = 0; step < 20; ++step) {
    const SampleResult r = sampler.Sample(logits);
    // Not changed by penalties, temperature or truncation.
    EXPECT_NEAR(r.logprob, ref[r.token], 1e-5);
    ASSERT_EQ(r.top.size(), 5u);
    for (size_t i = 0; i < 5; ++i) {
      EXPECT_EQ(r.top[i].token, order[i]);
      EXPECT_NEAR(r.top[i].logprob, ref[order[i]], 1e-5);
    }
  }
  EXPECT_EQ(order[0], 17);
  EXPECT_EQ(order[1], 42);
}

TEST(SamplerTest, LogprobsClampToVocabAndSortDescending) {
  const std::vector<float> logits = {0.5f, -1.0f, 3.0f, 0.5f, 2.0f};
  SamplingParams p = Greedy();
  p.logprobs = 20;
  const SampleResult r = Sampler(p, {}).Sample(logits);
  const std::vector<double> ref = LogSoftmax(logits);
  const std::vector<int32_t> expected = {2, 4, 0, 3, 1};
  ASSERT_EQ(r.top.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(r.top[i].token, expected[i]);
    EXPECT_NEAR(r.top[i].logprob, ref[expected[i]], 1e-5);
  }
  EXPECT_NEAR(r.logprob, ref[2], 1e-5);
}

TEST(SamplerTest, LogprobsOnLargeVocab) {
  const std::vector<float> logits = SomeLogits(128000, 5);
  const std::vector<double> ref = LogSoftmax(logits);
  SamplingParams p = Seeded(0.8f);
  p.logprobs = 3;
  const SampleResult r = Sampler(p, {}).Sample(logits);
  EXPECT_NEAR(r.logprob, ref[r.token], 1e-5);
  const int32_t best = std::max_element(logits.begin(), logits.end()) - logits.begin();
  ASSERT_EQ(r.top.size(), 3u);
  EXPECT_EQ(r.top[0].token, best);
  EXPECT_GE(r.top[0].logprob, r.top[1].logprob);
  EXPECT_GE(r.top[1].logprob, r.top[2].logprob);
}

// ---------------------------------------------------------------------------------------------
// Validation

TEST(ValidateSamplingParamsTest, AcceptsDefaultsAndEdges) {
  EXPECT_TRUE(ValidateSamplingParams(SamplingParams{}, 32000).ok());
  SamplingParams p;
  p.temperature = 0.0f;
  p.top_k = -1;
  p.top_p = 1.0f;
  p.min_p = 1.0f;
  p.presence_penalty = -2.0f;
  p.frequency_penalty = 2.0f;
  p.logprobs = 20;
  p.max_tokens = 1;
  p.stop_token_ids = {0, 31999};
  p.stop = {"\n\n"};
  EXPECT_TRUE(ValidateSamplingParams(p, 32000).ok());
}

TEST(ValidateSamplingParamsTest, RejectsOutOfRange) {
  struct Case {
    const char* field;
    void (*mutate)(SamplingParams&);
  };
  const Case cases[] = {
      {"temperature", [](SamplingParams& p) { p.temperature = kNaN; }},
      {"temperature", [](SamplingParams& p) { p.temperature = -0.1f; }},
      {"temperature", [](SamplingParams& p) { p.temperature = kInf; }},
      {"top_k", [](SamplingParams& p) { p.top_k = -2; }},
      {"top_p", [](SamplingParams& p) { p.top_p = -0.5f; }},
      {"top_p", [](SamplingParams& p) { p.top_p = 0.0f; }},
      {"top_p", [](SamplingParams& p) { p.top_p = 1.01f; }},
      {"top_p", [](SamplingParams& p) { p.top_p = kNaN; }},
      {"min_p", [](SamplingParams& p) { p.min_p = 1.5f; }},
      {"min_p", [](SamplingParams& p) { p.min_p = -0.01f; }},
      {"min_p", [](SamplingParams& p) { p.min_p = kNaN; }},
      {"repetition_penalty", [](SamplingParams& p) { p.repetition_penalty = 0.0f; }},
      {"repetition_penalty", [](SamplingParams& p) { p.repetition_penalty = -1.0f; }},
      {"repetition_penalty", [](SamplingParams& p) { p.repetition_penalty = kNaN; }},
      {"presence_penalty", [](SamplingParams& p) { p.presence_penalty = 2.5f; }},
      {"presence_penalty", [](SamplingParams& p) { p.presence_penalty = kNaN; }},
      {"frequency_penalty", [](SamplingParams& p) { p.frequency_penalty = -2.01f; }},
      {"logprobs", [](SamplingParams& p) { p.logprobs = 21; }},
      {"logprobs", [](SamplingParams& p) { p.logprobs = -1; }},
      {"max_tokens", [](SamplingParams& p) { p.max_tokens = 0; }},
      {"max_tokens", [](SamplingParams& p) { p.max_tokens = -5; }},
      {"stop_token_ids",
       [](SamplingParams& p) {
         p.stop_token_ids = {5, 32000};
       }},
      {"stop_token_ids", [](SamplingParams& p) { p.stop_token_ids = {-1}; }},
      {"stop",
       [](SamplingParams& p) {
         p.stop = {"ok", ""};
       }},
  };
  for (const Case& c : cases) {
    SamplingParams p;
    c.mutate(p);
    const absl::Status status = ValidateSamplingParams(p, 32000);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_THAT(std::string(status.message()), HasSubstr(c.field));
  }
  EXPECT_EQ(ValidateSamplingParams(SamplingParams{}, 0).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvasir

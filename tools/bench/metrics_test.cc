#include "tools/bench/metrics.h"

#include <gtest/gtest.h>

namespace kvasir::bench {
namespace {

constexpr double kEps = 1e-9;

RequestOutput Ok(double start, double ttft, std::vector<double> itl, int tokens) {
  RequestOutput o;
  o.success = true;
  o.start_time = start;
  o.ttft = ttft;
  o.itl = std::move(itl);
  double t = ttft;
  for (double g : o.itl) t += g;
  o.latency = t;
  o.output_tokens = tokens;
  o.prompt_len = 10;
  return o;
}

TEST(PercentileTest, MatchesNumpyLinearInterpolation) {
  // numpy.percentile([1, 2, 3, 4], p): 99 -> 3.97, 50 -> 2.5, 25 -> 1.75, 0 -> 1, 100 -> 4.
  const std::vector<double> v = {4, 1, 3, 2};
  EXPECT_NEAR(Percentile(v, 99), 3.97, kEps);
  EXPECT_NEAR(Percentile(v, 50), 2.5, kEps);
  EXPECT_NEAR(Percentile(v, 25), 1.75, kEps);
  EXPECT_NEAR(Percentile(v, 0), 1, kEps);
  EXPECT_NEAR(Percentile(v, 100), 4, kEps);
  EXPECT_EQ(Percentile({}, 99), 0.0);
  EXPECT_NEAR(Percentile({7}, 99), 7, kEps);
}

TEST(SummarizeTest, PopulationStdInMilliseconds) {
  const MetricSummary s = Summarize({0.010, 0.020, 0.030, 0.040}, {50, 90});
  EXPECT_NEAR(s.mean_ms, 25, kEps);
  EXPECT_NEAR(s.median_ms, 25, kEps);
  EXPECT_NEAR(s.std_ms, 11.180339887498949, 1e-9);  // numpy.std (ddof=0)
  ASSERT_EQ(s.percentiles_ms.size(), 2u);
  EXPECT_NEAR(s.percentiles_ms[1].second, 37, kEps);
}

TEST(CalculateMetricsTest, KnownTimings) {
  // Request A: TTFT 100 ms, 4 more chunks 20 ms apart, 5 tokens from usage.
  // Request B: TTFT 300 ms, 2 chunks 50 ms apart, 3 tokens.
  // Request C: failed (must not touch latency figures).
  std::vector<RequestOutput> outs = {Ok(0.0, 0.100, {0.02, 0.02, 0.02, 0.02}, 5),
                                     Ok(0.5, 0.300, {0.05, 0.05}, 3), RequestOutput{}};
  outs[2].error = "HTTP 500";
  outs[2].ttft = 99;  // garbage on a failed request is ignored
  auto counter = MakeWordCounter();
  const BenchmarkMetrics m = CalculateMetrics(outs, 2.0, *counter, {50, 99}, {});
  EXPECT_EQ(m.completed, 2);
  EXPECT_EQ(m.failed, 1);
  EXPECT_EQ(m.total_input, 20);
  EXPECT_EQ(m.total_output, 8);
  EXPECT_NEAR(m.request_throughput, 1.0, kEps);
  EXPECT_NEAR(m.output_throughput, 4.0, kEps);
  EXPECT_NEAR(m.total_token_throughput, 14.0, kEps);
  EXPECT_NEAR(m.ttft.mean_ms, 200, 1e-6);
  EXPECT_NEAR(m.ttft.median_ms, 200, 1e-6);
  EXPECT_NEAR(m.ttft.std_ms, 100, 1e-6);
  // TPOT = (latency - ttft) / (tokens - 1): A 80/4 = 20 ms, B 100/2 = 50 ms.
  EXPECT_NEAR(m.tpot.mean_ms, 35, 1e-6);
  // ITL pools every gap: 4 x 20 ms and 2 x 50 ms.
  EXPECT_NEAR(m.itl.mean_ms, 30, 1e-6);
  EXPECT_NEAR(m.itl.median_ms, 20, 1e-6);
  EXPECT_NEAR(m.itl.percentiles_ms[1].second, 50, 1e-6);
  // E2EL: 180 ms and 400 ms.
  EXPECT_NEAR(m.e2el.mean_ms, 290, 1e-6);
  EXPECT_EQ(m.actual_output_lens, (std::vector<int>{5, 3, 0}));
  // A spans [0, 0.18), B [0.5, 0.9): never concurrent.
  EXPECT_EQ(m.max_concurrent_requests, 1);
  EXPECT_NEAR(m.max_output_tokens_per_s, 8, kEps);  // every chunk lands in second 0
}

TEST(CalculateMetricsTest, CountsTokensWhenUsageIsMissing) {
  RequestOutput o = Ok(0, 0.1, {0.1}, 0);
  o.generated_text = "one two three four";
  auto counter = MakeWordCounter();
  const BenchmarkMetrics m = CalculateMetrics({o}, 1.0, *counter, {99}, {});
  EXPECT_EQ(m.total_output, 4);
  EXPECT_TRUE(m.output_tokens_counted);
  EXPECT_NEAR(m.tpot.mean_ms, 100.0 / 3, 1e-6);
}

TEST(CalculateMetricsTest, SingleTokenHasNoTpotButCountsForGoodput) {
  auto counter = MakeWordCounter();
  const BenchmarkMetrics m =
      CalculateMetrics({Ok(0, 0.05, {}, 1)}, 1.0, *counter, {99}, {{"tpot", 1.0}});
  EXPECT_TRUE(m.tpots.empty());
  EXPECT_NEAR(m.request_goodput, 1.0, kEps);  // TPOT counts as 0 for goodput
}

TEST(CalculateMetricsTest, GoodputRequiresEverySlo) {
  // TTFTs 50/150/50 ms, TPOTs 10/10/40 ms; SLO ttft <= 100, tpot <= 20 -> only the first.
  std::vector<RequestOutput> outs = {Ok(0, 0.05, {0.01, 0.01}, 3), Ok(0, 0.15, {0.01, 0.01}, 3),
                                     Ok(0, 0.05, {0.04, 0.04}, 3)};
  auto counter = MakeWordCounter();
  const BenchmarkMetrics m =
      CalculateMetrics(outs, 4.0, *counter, {99}, {{"ttft", 100}, {"tpot", 20}});
  EXPECT_NEAR(m.request_goodput, 0.25, kEps);
  // A bound equal to the value passes (vLLM compares slo >= value).
  const BenchmarkMetrics m2 = CalculateMetrics(outs, 1.0, *counter, {99}, {{"e2el", 70.001}});
  EXPECT_NEAR(m2.request_goodput, 1.0, kEps);
}

TEST(CalculateMetricsTest, PeakConcurrencyIsHalfOpen) {
  // [0, 1) and [1, 2) touch but do not overlap; [0.5, 1.5) overlaps both.
  std::vector<RequestOutput> outs = {Ok(0, 1.0, {}, 1), Ok(1.0, 1.0, {}, 1)};
  auto counter = MakeWordCounter();
  EXPECT_EQ(CalculateMetrics(outs, 2, *counter, {99}, {}).max_concurrent_requests, 1);
  outs.push_back(Ok(0.5, 1.0, {}, 1));
  EXPECT_EQ(CalculateMetrics(outs, 2, *counter, {99}, {}).max_concurrent_requests, 2);
}

TEST(CalculateMetricsTest, AllFailedGivesZeros) {
  RequestOutput f;
  f.error = "boom";
  auto counter = MakeWordCounter();
  const BenchmarkMetrics m = CalculateMetrics({f, f}, 1.0, *counter, {99}, {});
  EXPECT_EQ(m.completed, 0);
  EXPECT_EQ(m.failed, 2);
  EXPECT_EQ(m.ttft.mean_ms, 0);
  EXPECT_EQ(m.ttft.percentiles_ms[0].second, 0);
}

}  // namespace
}  // namespace kvasir::bench

#include "tools/bench/arrivals.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace kvasir::bench {
namespace {

struct Moments {
  double mean, var;
};
Moments MomentsOf(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m += x;
  m /= v.size();
  double var = 0;
  for (double x : v) var += (x - m) * (x - m);
  return {m, var / (v.size() - 1)};
}

// Gaps are gamma(shape = b, scale = 1 / (rate * b)): mean 1/rate, variance 1/(rate^2 b).
// With 200k samples the relative standard error of the mean is ~0.2%/sqrt(b) and of the
// variance ~0.5-1%, so 2% and 5% bounds hold for a fixed seed with a wide margin.
class GammaGapsTest : public ::testing::TestWithParam<double> {};

TEST_P(GammaGapsTest, MeanAndVarianceMatch) {
  const double rate = 8.0, b = GetParam();
  std::mt19937_64 rng(1234);
  const auto gaps = SampleInterArrivalGaps(200000, rate, b, rng);
  const Moments m = MomentsOf(gaps);
  EXPECT_NEAR(m.mean, 1.0 / rate, 0.02 / rate);
  const double want_var = 1.0 / (rate * rate * b);
  EXPECT_NEAR(m.var, want_var, 0.05 * want_var);
  for (double g : gaps) ASSERT_GE(g, 0.0);
}

INSTANTIATE_TEST_SUITE_P(Burstiness, GammaGapsTest, ::testing::Values(0.25, 0.5, 1.0, 2.0, 4.0));

TEST(ArrivalsTest, PoissonCountsPerWindowHaveEqualMeanAndVariance) {
  // A Poisson process with rate r has Poisson(r * w) counts in windows of length w.
  const double rate = 50.0;
  std::mt19937_64 rng(7);
  const auto gaps = SampleInterArrivalGaps(400000, rate, 1.0, rng);
  std::vector<double> counts;
  double t = 0, window_end = 1.0;
  int in_window = 0;
  for (double g : gaps) {
    t += g;
    while (t >= window_end) {
      counts.push_back(in_window);
      in_window = 0;
      window_end += 1.0;
    }
    ++in_window;
  }
  const Moments m = MomentsOf(counts);
  EXPECT_NEAR(m.mean, rate, 0.02 * rate);
  EXPECT_NEAR(m.var, rate, 0.08 * rate);  // ~8000 windows: s.e. of the variance ~1.6%
}

TEST(ArrivalsTest, TimesAreRescaledToNOverRate) {
  std::mt19937_64 rng(3);
  const auto t = ArrivalTimes(1000, 20.0, 1.0, rng);
  ASSERT_EQ(t.size(), 1000u);
  EXPECT_NEAR(t.back(), 1000 / 20.0, 1e-9);
  for (size_t i = 1; i < t.size(); ++i) ASSERT_GE(t[i], t[i - 1]);
}

TEST(ArrivalsTest, InfiniteRateSendsAllAtOnce) {
  std::mt19937_64 rng(3);
  for (double x : ArrivalTimes(50, std::numeric_limits<double>::infinity(), 1.0, rng)) {
    EXPECT_EQ(x, 0.0);
  }
}

TEST(ArrivalsTest, InfiniteBurstinessIsUniform) {
  std::mt19937_64 rng(3);
  const auto t = ArrivalTimes(4, 2.0, std::numeric_limits<double>::infinity(), rng);
  EXPECT_DOUBLE_EQ(t[0], 0.5);
  EXPECT_DOUBLE_EQ(t[3], 2.0);
}

TEST(ArrivalsTest, SameSeedSameSchedule) {
  std::mt19937_64 a(42), b(42);
  EXPECT_EQ(ArrivalTimes(100, 5.0, 0.5, a), ArrivalTimes(100, 5.0, 0.5, b));
}

}  // namespace
}  // namespace kvasir::bench

#include "scheduler/placement.h"

#include <map>
#include <random>

#include "gtest/gtest.h"

namespace kvasir::sched {
namespace {

WorkerLoad W(int64_t tokens, int32_t requests, bool healthy = true) {
  WorkerLoad w;
  w.outstanding_tokens = tokens;
  w.outstanding_requests = requests;
  w.healthy = healthy;
  return w;
}

TEST(PlacementTest, RoundRobinCyclesAndSkipsUnhealthy) {
  RoundRobinPlacement p;
  std::vector<WorkerLoad> ws = {W(0, 0), W(0, 0, false), W(0, 0)};
  std::vector<size_t> picks;
  for (int i = 0; i < 4; ++i) picks.push_back(*p.Pick(ws, {}));
  EXPECT_EQ(picks, (std::vector<size_t>{0, 2, 0, 2}));
  ws[0].healthy = ws[2].healthy = false;
  EXPECT_EQ(p.Pick(ws, {}).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(p.Pick({}, {}).status().code(), absl::StatusCode::kUnavailable);
}

TEST(PlacementTest, LeastLoadedPicksFewestTokensThenRequests) {
  LeastLoadedPlacement p(LoadMetric::kTokens);
  EXPECT_EQ(*p.Pick({W(500, 1), W(100, 9), W(300, 0)}, {}), 1u);
  EXPECT_EQ(*p.Pick({W(100, 3), W(100, 2), W(100, 4)}, {}), 1u);  // token tie: fewer requests
  // The least loaded worker is unhealthy: the next one.
  EXPECT_EQ(*p.Pick({W(500, 1), W(100, 9, false), W(300, 0)}, {}), 2u);
  EXPECT_EQ(p.Pick({W(0, 0, false)}, {}).status().code(), absl::StatusCode::kUnavailable);
  LeastLoadedPlacement r(LoadMetric::kRequests);
  EXPECT_EQ(*r.Pick({W(500, 1), W(100, 9), W(300, 0)}, {}), 2u);
}

TEST(PlacementTest, LeastLoadedBreaksTiesRoundRobinWithoutRandomSource) {
  LeastLoadedPlacement p;
  std::vector<WorkerLoad> ws = {W(10, 1), W(5, 1), W(50, 1), W(5, 1)};
  std::vector<size_t> picks;
  for (int i = 0; i < 4; ++i) picks.push_back(*p.Pick(ws, {}));
  EXPECT_EQ(picks, (std::vector<size_t>{1, 3, 1, 3}));
}

TEST(PlacementTest, LeastLoadedBreaksTiesWithTheInjectedRandomSource) {
  std::mt19937_64 g1(42), g2(42);
  LeastLoadedPlacement a(LoadMetric::kTokens, g1), b(LoadMetric::kTokens, g2);
  std::vector<WorkerLoad> ws = {W(5, 1), W(9, 1), W(5, 1), W(5, 1, false), W(5, 1)};
  std::map<size_t, int> counts;
  for (int i = 0; i < 3000; ++i) {
    size_t x = *a.Pick(ws, {});
    EXPECT_EQ(x, *b.Pick(ws, {}));  // same seed, same choices
    ++counts[x];
  }
  EXPECT_EQ(counts.size(), 3u);  // only the tied healthy workers 0, 2, 4
  for (size_t w : {0u, 2u, 4u}) EXPECT_NEAR(counts[w], 1000, 150) << w;
}

TEST(PlacementTest, SpreadsLoadWhenTheCallerUpdatesIt) {
  // The router adds each request's tokens to the chosen worker: two workers stay balanced.
  LeastLoadedPlacement p;
  std::vector<WorkerLoad> ws = {W(0, 0), W(0, 0)};
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> len(1, 100);
  for (int i = 0; i < 1000; ++i) {
    size_t w = *p.Pick(ws, {});
    ws[w].outstanding_tokens += len(rng);
    ++ws[w].outstanding_requests;
  }
  EXPECT_LE(std::abs(ws[0].outstanding_tokens - ws[1].outstanding_tokens), 100);
}

TEST(PlacementTest, MakesPoliciesByName) {
  std::mt19937_64 g(1);
  EXPECT_EQ((*MakePlacementPolicy("round_robin"))->name(), "round_robin");
  EXPECT_EQ((*MakePlacementPolicy("least_loaded", g))->name(), "least_loaded");
  auto r = MakePlacementPolicy("least_requests");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*(*r)->Pick({W(500, 1), W(100, 9)}, {}), 0u);
  auto bad = MakePlacementPolicy("random");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvasir::sched

#include "scheduler/kv_cache_budget.h"

#include <map>
#include <vector>

#include "gtest/gtest.h"
#include "scheduler/batch_scheduler.h"

namespace kvasir::sched {
namespace {

KvCacheConfig CacheConfig(int32_t num_blocks) {
  KvCacheConfig c;
  c.num_layers = 2;
  c.num_kv_heads = 2;
  c.head_dim = 4;
  c.block_size = 4;
  c.num_blocks = num_blocks;
  return c;
}

TEST(KvCacheBudgetTest, CountsHeadGranularBlocks) {
  KvCache cache(CacheConfig(40));
  KvCacheBudget budget(&cache);
  EXPECT_EQ(budget.NumTotalBlocks(), 40);
  EXPECT_EQ(budget.BlocksForTokens(5), 2 * 4);  // 2 token blocks x (2 layers x 2 heads)
  EXPECT_EQ(budget.BlocksNeeded(7, 5), 8);      // unknown sequence: from empty
  ASSERT_TRUE(budget.Allocate(7, 5).ok());
  EXPECT_TRUE(cache.Contains(7));
  EXPECT_EQ(budget.NumFreeBlocks(), 32);
  // Reserve is idempotent until the step appends: asking again takes nothing more.
  ASSERT_TRUE(budget.Allocate(7, 5).ok());
  EXPECT_EQ(budget.NumFreeBlocks(), 32);
  EXPECT_EQ(budget.BlocksNeeded(7, 8), 0);  // counted from the stored length (0)
  EXPECT_EQ(budget.BlocksNeeded(7, 9), 4);  // 9 tokens: a third token block
  EXPECT_EQ(budget.Allocate(8, 40).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_FALSE(cache.Contains(8));  // a failed first allocation leaves nothing behind
  budget.Free(7);
  EXPECT_FALSE(cache.Contains(7));
  EXPECT_EQ(budget.NumFreeBlocks(), 40);
}

TEST(KvCacheBudgetTest, SchedulerDrivesTheRealCache) {
  // The scheduler over the real cache, with the engine's appends simulated by writing rows.
  KvCache cache(CacheConfig(16));  // 4 token blocks of 4 tokens per sequence-head set
  KvCacheBudget budget(&cache);
  FakeClock clock;
  SchedulerConfig sc;
  sc.max_num_seqs = 4;
  sc.max_num_batched_tokens = 6;
  BatchScheduler sched(sc, &budget, &clock);
  EXPECT_EQ(sched.Add(1, 17, 1).code(), absl::StatusCode::kInvalidArgument);  // 18 > 16 tokens
  ASSERT_TRUE(sched.Add(1, 7, 3).ok());
  ASSERT_TRUE(sched.Add(2, 3, 5).ok());
  std::vector<float> row(4, 0.5f);
  int steps = 0;
  std::map<int64_t, int> produced;
  while (sched.has_work() && steps < 100) {
    ScheduledStep step = sched.Schedule();
    for (int64_t id : step.preempted) EXPECT_FALSE(cache.Contains(id));
    std::vector<StepOutcome> outcomes;
    for (const ScheduledSeq& s : step.seqs) {
      ASSERT_TRUE(cache.Contains(s.request_id));
      EXPECT_EQ(cache.Length(s.request_id), s.start_pos);
      EXPECT_EQ(cache.BlocksNeeded(s.request_id, s.num_tokens), 0);  // already reserved
      for (int32_t l = 0; l < 2; ++l) {
        for (int32_t h = 0; h < 2; ++h) {
          for (int32_t t = 0; t < s.num_tokens; ++t) {
            cache.Append(s.request_id, l, h, row.data(), row.data(), 1, 4);
          }
        }
      }
      if (s.wants_logits) ++produced[s.request_id];
      outcomes.push_back({s.request_id, s.wants_logits, false});
    }
    ASSERT_TRUE(sched.OnStepDone(outcomes).ok());
    ++steps;
  }
  EXPECT_FALSE(sched.has_work());
  EXPECT_EQ(produced[1], 3);
  EXPECT_EQ(produced[2], 5);
  EXPECT_EQ(cache.num_sequences(), 0u);
  EXPECT_EQ(cache.pool().num_free(), 16);
}

}  // namespace
}  // namespace kvasir::sched

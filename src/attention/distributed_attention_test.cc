#include "attention/distributed_attention.h"

#include <cmath>
#include <limits>

#include "gtest/gtest.h"
#include "kvcache/kv_directory.h"
#include "runtime/cpu/cpu_backend.h"

namespace kvasir {
namespace {

// ---- KvDirectory bookkeeping.
TEST(KvDirectoryTest, FillsTheFreestWorkerThenContinuesOnTheNext) {
  KvDirectory d(/*blocks_per_token_block=*/4, /*block_size=*/16);
  int a = d.AddWorker("a", 40);  // 10 token blocks = 160 tokens
  int b = d.AddWorker("b", 80);  // 320 tokens
  EXPECT_EQ(d.MaxTokens(), 480);
  auto p = d.Allocate(7, 400);
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->size(), 2u);
  EXPECT_EQ((*p)[0].worker, b);
  EXPECT_EQ((*p)[0].base, 0);
  EXPECT_EQ((*p)[0].capacity, 320);
  EXPECT_EQ((*p)[1].worker, a);
  EXPECT_EQ((*p)[1].base, 320);
  EXPECT_EQ((*p)[1].capacity, 80);
  EXPECT_EQ(d.worker_free_blocks(b), 0);
  EXPECT_EQ(d.worker_free_blocks(a), 40 - 4 * 5);
  EXPECT_EQ(d.used_blocks(), 80 + 20);
  // Not now: 81 tokens need 6 token blocks, 5 are free. Nothing changes.
  auto full = d.Allocate(8, 81);
  EXPECT_TRUE(absl::IsResourceExhausted(full.status())) << full.status();
  EXPECT_EQ(d.used_blocks(), 100);
  // Never: more than the empty workers hold.
  EXPECT_TRUE(absl::IsInvalidArgument(d.Allocate(9, 481).status()));
  EXPECT_TRUE(absl::IsAlreadyExists(d.Allocate(7, 1).status()));
  EXPECT_EQ(d.Free(7).size(), 2u);
  EXPECT_EQ(d.used_blocks(), 0);
  EXPECT_TRUE(d.Free(7).empty());  // twice is harmless
  d.SetAlive(b, false);
  auto only_a = d.Allocate(10, 100);
  ASSERT_TRUE(only_a.ok());
  ASSERT_EQ(only_a->size(), 1u);
  EXPECT_EQ((*only_a)[0].worker, a);
}

// ---- The shard on its own: bad input changes nothing.
TEST(AttentionShardTest, RejectsBadItemsWithoutAppending) {
  CpuBackend backend(1);
  AttentionShape shape{4, 2, 8, 2};
  AttentionShard shard(shape, 4, 64, &backend);
  ASSERT_TRUE(shard.AllocateSegment(1, 0, 6).ok());
  EXPECT_TRUE(absl::IsAlreadyExists(shard.AllocateSegment(1, 0, 6)));
  EXPECT_TRUE(absl::IsResourceExhausted(shard.AllocateSegment(2, 0, 1000)));
  EXPECT_EQ(shard.Info().free_blocks, 64 - 2 * 2 * 2);  // the failed one left nothing behind
  std::vector<float> q(3 * 32, 0.5f), kv(7 * 16, 0.25f), o(7 * 32), lse(7 * 4);
  ShardItem it;
  it.segment_key = 1;
  it.num_queries = 3;
  it.q = q.data();
  it.q_stride = 32;
  it.num_append = 7;  // capacity is 6
  it.k = kv.data();
  it.v = kv.data();
  it.kv_stride = 16;
  EXPECT_TRUE(absl::IsInvalidArgument(shard.Step(0, {&it, 1}, o.data(), lse.data())));
  ShardItem unknown = it;
  unknown.segment_key = 99;
  EXPECT_TRUE(absl::IsNotFound(shard.Step(0, {&unknown, 1}, o.data(), lse.data())));
  EXPECT_TRUE(absl::IsInvalidArgument(shard.Step(5, {&it, 1}, o.data(), lse.data())));
  it.num_append = 3;
  ASSERT_TRUE(shard.Step(0, {&it, 1}, o.data(), lse.data()).ok());
  // Equal keys and values everywhere: every row's output is the value, lse = ln(count) + s.
  for (int r = 0; r < 3; ++r) {
    EXPECT_NEAR(o[r * 32], 0.25f, 1e-6);
    const float s = 8 * 0.5f * 0.25f / std::sqrt(8.0f);
    EXPECT_NEAR(lse[r * 4], s + std::log(static_cast<float>(r + 1)), 1e-5) << r;
  }
  shard.FreeSegment(1);
  shard.FreeSegment(1);
  EXPECT_EQ(shard.Info().free_blocks, 64);
}

// A segment whose base is past a query's position contributes nothing to it.
TEST(AttentionShardTest, SegmentAfterTheQueryIsEmpty) {
  CpuBackend backend(1);
  AttentionShape shape{2, 1, 4, 1};
  AttentionShard shard(shape, 4, 16, &backend);
  ASSERT_TRUE(shard.AllocateSegment(3, 10, 4).ok());
  std::vector<float> q(2 * 8, 1.0f), kv(4, 1.0f), o(2 * 8), lse(2 * 2);
  ShardItem it;
  it.segment_key = 3;
  it.q_start = 9;  // rows at positions 9 and 10; the segment holds position 10 after append
  it.num_queries = 2;
  it.q = q.data();
  it.q_stride = 8;
  it.num_append = 1;
  it.k = kv.data();
  it.v = kv.data();
  it.kv_stride = 4;
  ASSERT_TRUE(shard.Step(0, {&it, 1}, o.data(), lse.data()).ok());
  EXPECT_EQ(lse[0], -std::numeric_limits<float>::infinity());
  EXPECT_EQ(o[0], 0.0f);
  EXPECT_NEAR(o[8], 1.0f, 1e-6);
  EXPECT_TRUE(std::isfinite(lse[2]));
}

}  // namespace
}  // namespace kvasir

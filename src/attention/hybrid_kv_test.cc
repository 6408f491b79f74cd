#include "attention/hybrid_kv.h"

#include <cmath>
#include <map>
#include <random>
#include <vector>

#include "attention/local_attention.h"
#include "gtest/gtest.h"
#include "kernels/attention/paged_attention_ref.h"
#include "runtime/cpu/cpu_backend.h"

namespace kvasir {
namespace {

// ---- The placement rule on its own.
TEST(HybridPlacementTest, SinksFirstThenRoomCapAndReserve) {
  HybridPlacementOptions o;
  o.sink_tokens = 16;
  const HybridPlacement p(o);
  // A new sequence: its sinks may use the reserve; the rest only room above it.
  EXPECT_EQ(p.NearShare(0, 100, /*room=*/200, /*above=*/200), 100);
  EXPECT_EQ(p.NearShare(0, 100, 200, 0), 16);
  EXPECT_EQ(p.NearShare(0, 100, 200, 40), 40);
  EXPECT_EQ(p.NearShare(0, 10, 200, 0), 10);   // a short prompt: all of it is sinks
  EXPECT_EQ(p.NearShare(0, 100, 15, 15), -1);  // its sinks do not fit: wait
  EXPECT_EQ(p.NearShare(0, 100, 80, 80), 80);
  // Past its sinks a sequence grows near only above the reserve.
  EXPECT_EQ(p.NearShare(64, 1, 200, 0), 0);
  EXPECT_EQ(p.NearShare(64, 1, 0, 0), 0);  // never waits once its sinks are near
  EXPECT_EQ(p.NearShare(8, 100, 200, 0), 8);  // the rest of its sinks
  // A per-sequence cap.
  o.max_near_tokens = 48;
  const HybridPlacement capped(o);
  EXPECT_EQ(capped.NearShare(0, 100, 1000, 1000), 48);
  EXPECT_EQ(capped.NearShare(40, 100, 1000, 1000), 8);
  EXPECT_EQ(capped.NearShare(48, 1, 1000, 1000), 0);
  o.max_near_tokens = 4;  // below the sinks: the cap wins, still at least one token
  EXPECT_EQ(HybridPlacement(o).NearShare(0, 100, 1000, 0), 4);
}

KvCacheConfig SmallCache(int32_t blocks, bool host_storage) {
  KvCacheConfig k;
  k.num_layers = 2;
  k.num_kv_heads = 2;
  k.head_dim = 4;
  k.block_size = 4;
  k.num_blocks = blocks;
  k.host_storage = host_storage;
  return k;
}

// Many sequences growing at random over a small near pool: every part stays contiguous (near
// [0, near_end), far the rest), a sequence spills once, sinks are near, the pools hold exactly
// the tokens placed on them, and releasing everything frees both.
TEST(HybridKvTest, RandomGrowthKeepsBothPartsConsistent) {
  KvCache near_cache(SmallCache(/*blocks=*/4 * 24, false));  // 24 blocks per table = 96 tokens
  KvCache far_cache(SmallCache(4 * 400, false));
  CacheCapacity near(&near_cache), far(&far_cache);
  HybridPlacementOptions o;
  o.sink_tokens = 4;
  o.reserve_blocks = 4 * 2;  // two sinks' worth
  HybridKv kv(&near_cache, &near, &far, o);
  std::mt19937 rng(7);
  std::vector<int64_t> live;
  int64_t next_id = 1, spilled_seen = 0;
  for (int step = 0; step < 600; ++step) {
    if (live.size() < 6 || rng() % 10 == 0) live.push_back(next_id++);
    if (live.size() > 3 && rng() % 12 == 0) {
      const size_t i = rng() % live.size();
      kv.Release(live[i]);
      EXPECT_FALSE(kv.Contains(live[i]));
      EXPECT_FALSE(near_cache.Contains(live[i]));
      EXPECT_FALSE(far_cache.Contains(live[i]));
      live.erase(live.begin() + i);
      continue;
    }
    const int64_t id = live[rng() % live.size()];
    const int32_t n = rng() % 3 == 0 ? 1 + static_cast<int32_t>(rng() % 20) : 1;
    const int32_t end_before = kv.NearEnd(id);
    const int32_t len = kv.Length(id);
    const int64_t predicted = kv.BlocksNeeded(id, n);
    const int64_t free_before = near_cache.NumFreeBlocks() + far_cache.NumFreeBlocks();
    absl::Status s = kv.Grow(id, n);
    if (!s.ok()) {
      EXPECT_TRUE(absl::IsResourceExhausted(s)) << s;
      continue;
    }
    EXPECT_EQ(free_before - (near_cache.NumFreeBlocks() + far_cache.NumFreeBlocks()), predicted);
    ASSERT_TRUE(kv.Grow(id, n).ok());  // again: nothing more
    EXPECT_EQ(free_before - (near_cache.NumFreeBlocks() + far_cache.NumFreeBlocks()), predicted);
    const int32_t end = kv.NearEnd(id);
    if (end_before != HybridKv::kAllNear) {
      EXPECT_EQ(end, end_before);  // spilled for good
    }
    if (end != HybridKv::kAllNear) {
      ++spilled_seen;
      EXPECT_GE(end, std::min(len + n, o.sink_tokens));
      EXPECT_LE(end, len + n);
    }
    // Store the step: near part into the near cache, far part into the far one.
    const int32_t near_n = HybridKv::NearPart(end, len, n);
    if (near_n > 0) near_cache.Advance(id, near_n);
    if (near_n < n) far_cache.Advance(id, n - near_n);
    kv.Advance(id, n);
    EXPECT_EQ(kv.Length(id), len + n);
    EXPECT_EQ(near_cache.Length(id), std::min(kv.Length(id), end));
    EXPECT_EQ(far_cache.Contains(id) ? far_cache.Length(id) : 0,
              std::max(0, kv.Length(id) - std::min(kv.Length(id), end)));
  }
  EXPECT_GT(spilled_seen, 0);
  for (int64_t id : live) kv.Release(id);
  EXPECT_EQ(near_cache.pool().num_free(), near_cache.pool().num_blocks());
  EXPECT_EQ(far_cache.pool().num_free(), far_cache.pool().num_blocks());
  EXPECT_EQ(kv.Usage().blocks_used, 0);
  EXPECT_EQ(kv.Usage().blocks_total, 4 * 24 + 4 * 400);
}

TEST(HybridKvTest, NewSequenceWaitsForItsSinksAndCheckFitsCountsBothPools) {
  KvCache near_cache(SmallCache(4 * 4, false));  // 16 tokens per table
  KvCache far_cache(SmallCache(4 * 10, false));  // 40
  CacheCapacity near(&near_cache), far(&far_cache);
  HybridPlacementOptions o;
  o.sink_tokens = 8;
  HybridKv kv(&near_cache, &near, &far, o);
  ASSERT_TRUE(kv.Grow(1, 40).ok());
  EXPECT_EQ(kv.NearEnd(1), 16);  // all the near pool, the rest far
  EXPECT_TRUE(absl::IsResourceExhausted(kv.Grow(2, 4)));
  EXPECT_FALSE(kv.Contains(2));
  EXPECT_FALSE(near_cache.Contains(2));
  EXPECT_FALSE(far_cache.Contains(2));
  kv.Release(1);
  EXPECT_TRUE(kv.CheckFits(16 + 40).ok());
  EXPECT_TRUE(absl::IsInvalidArgument(kv.CheckFits(16 + 41)));
  // A far pool that is full: the growth fails whole and a new sequence leaves nothing behind.
  ASSERT_TRUE(far.Grow(99, 40).ok());
  EXPECT_TRUE(absl::IsResourceExhausted(kv.Grow(3, 20)));
  EXPECT_FALSE(near_cache.Contains(3));
  EXPECT_EQ(near_cache.pool().num_free(), near_cache.pool().num_blocks());
}

// A far pool that counts every Grow as more tokens (as DistributedAttention does): the runner
// growing a step the scheduler grew already must not reserve its far part twice.
class CountingFar : public KvCapacity {
 public:
  absl::Status Grow(int64_t seq_id, int32_t n) override {
    grown[seq_id] += n;
    return absl::OkStatus();
  }
  int64_t BlocksNeeded(int64_t, int32_t n) const override { return n; }
  int64_t BlocksForTokens(int64_t t) const override { return t; }
  void Release(int64_t seq_id) override { grown.erase(seq_id); }
  bool Contains(int64_t seq_id) const override { return grown.count(seq_id) > 0; }
  absl::Status CheckFits(int64_t) const override { return absl::OkStatus(); }
  KvUsage Usage() const override { return {}; }
  std::map<int64_t, int64_t> grown;
};

TEST(HybridKvTest, RepeatedGrowOfAStepIsPassedOnOnce) {
  KvCache near_cache(SmallCache(4 * 2, false));  // 2 blocks per table = 8 tokens
  CacheCapacity near(&near_cache);
  CountingFar far;
  HybridPlacementOptions o;
  o.sink_tokens = 4;
  HybridKv kv(&near_cache, &near, &far, o);
  ASSERT_TRUE(kv.Grow(1, 20).ok());
  ASSERT_TRUE(kv.Grow(1, 20).ok());
  EXPECT_EQ(kv.BlocksNeeded(1, 20), 0);
  EXPECT_EQ(kv.NearEnd(1), 8);
  EXPECT_EQ(far.grown[1], 12);
  near_cache.Advance(1, 8);
  kv.Advance(1, 20);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(kv.Grow(1, 1).ok());
  EXPECT_EQ(far.grown[1], 13);
  kv.Advance(1, 1);
  ASSERT_TRUE(kv.Grow(1, 1).ok());
  EXPECT_EQ(far.grown[1], 14);
  kv.Release(1);
  EXPECT_FALSE(far.Contains(1));
}

TEST(HybridKvTest, CheckFitsLeavesTheReserveToOthers) {
  KvCache near_cache(SmallCache(4 * 10, false));  // 10 blocks per table
  KvCache far_cache(SmallCache(4 * 10, false));
  CacheCapacity near(&near_cache), far(&far_cache);
  HybridPlacementOptions o;
  o.sink_tokens = 4;
  o.reserve_blocks = 4 * 3;  // 3 blocks per table stay free for other sequences' sinks
  HybridKv kv(&near_cache, &near, &far, o);
  EXPECT_TRUE(kv.CheckFits(7 * 4 + 40).ok());
  EXPECT_TRUE(absl::IsInvalidArgument(kv.CheckFits(7 * 4 + 41)));
  // ... and a sequence of that length does fit, alone.
  ASSERT_TRUE(kv.Grow(1, 7 * 4 + 40).ok());
  EXPECT_EQ(kv.NearEnd(1), 7 * 4);
}

// The identity the hybrid rests on: attention over a sequence whose tokens [0, E) sit in one
// pool and [E, L) in another equals attention over all of them in one pool, when the near
// part's partial result (what the GPU computes) and the far executor's output with its lse
// (LocalAttention::Attend's new lse output) are merged by log-sum-exp.
TEST(HybridKvTest, NearAndFarPartialsMergeToWholeAttention) {
  const AttentionShape shape{/*num_heads=*/4, /*num_kv_heads=*/2, /*head_dim=*/8,
                             /*num_layers=*/1};
  const int32_t L = 37, E = 12, qd = shape.q_dim(), kvd = shape.kv_dim();
  const int64_t stride = qd + 2 * kvd;
  CpuBackend backend(1);
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  std::vector<float> qkv(L * stride);
  for (float& x : qkv) x = nd(rng);

  KvCacheConfig kc = SmallCache(64, true);
  kc.num_layers = 1;
  kc.head_dim = shape.head_dim;
  KvCache whole_cache(kc), near_cache(kc), far_cache(kc);
  LocalAttention whole(&whole_cache, &backend, shape), far(&far_cache, &backend, shape);
  std::vector<float> want(L * qd), far_out((L - E) * qd), far_lse((L - E) * shape.num_heads);
  ASSERT_TRUE(whole.Grow(1, L).ok());
  const AttentionStepSeq all{1, 0, L};
  ASSERT_TRUE(whole.BeginStep({&all, 1}).ok());
  std::vector<float> whole_lse(L * shape.num_heads);
  ASSERT_TRUE(whole.Attend(0, qkv.data(), stride, want.data(), whole_lse.data()).ok());
  // Near: the first E tokens stored; far: the rest, attended (and stored) by the executor.
  ASSERT_TRUE(near_cache.Create(1).ok());
  ASSERT_TRUE(near_cache.Reserve(1, E).ok());
  for (int32_t h = 0; h < shape.num_kv_heads; ++h) {
    const float* k = qkv.data() + qd + h * shape.head_dim;
    near_cache.Append(1, 0, h, k, k + kvd, E, stride);
  }
  ASSERT_TRUE(far.Grow(1, L - E).ok());
  const AttentionStepSeq tail{1, 0, L - E};
  ASSERT_TRUE(far.BeginStep({&tail, 1}).ok());
  ASSERT_TRUE(far.Attend(0, qkv.data() + E * stride, stride, far_out.data(), far_lse.data()).ok());
  const int32_t G = shape.group(), hd = shape.head_dim;
  for (int32_t r = E; r < L; ++r) {
    for (int32_t h = 0; h < shape.num_kv_heads; ++h) {
      // Near partial of row r over [0, E), then merged with the far row.
      std::vector<float> o_parts(2 * G * hd), lse_parts(2 * G);
      PagedPartialAttentionRef(TableAttention(near_cache.pool(), near_cache.table(1, 0, h), hd, 0,
                                              E, qkv.data() + r * stride + h * G * hd, G,
                                              o_parts.data(), lse_parts.data()));
      const int64_t fr = r - E;
      for (int32_t i = 0; i < G; ++i) {
        for (int32_t d = 0; d < hd; ++d) {
          o_parts[(G + i) * hd + d] = far_out[fr * qd + (h * G + i) * hd + d];
        }
        lse_parts[G + i] = far_lse[fr * shape.num_heads + h * G + i];
      }
      std::vector<float> got(G * hd), got_lse(G);
      MergeAttentionRef(2, o_parts.data(), lse_parts.data(), G, hd, got.data(), got_lse.data());
      for (int32_t i = 0; i < G; ++i) {
        EXPECT_NEAR(got_lse[i], whole_lse[r * shape.num_heads + h * G + i], 1e-4);
        for (int32_t d = 0; d < hd; ++d) {
          EXPECT_NEAR(got[i * hd + d], want[r * qd + (h * G + i) * hd + d], 1e-5)
              << "row " << r << " head " << h * G + i;
        }
      }
    }
  }
  // The lse itself: ln Σ exp(scale q·k) over the row's causal range, computed directly.
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  for (int32_t r : {0, 5, L - 1}) {
    const int32_t hq = 3, kh = hq / G;
    double sum = 0.0;
    for (int32_t t = 0; t <= r; ++t) {
      double dot = 0.0;
      for (int32_t d = 0; d < hd; ++d) {
        dot += qkv[r * stride + hq * hd + d] * qkv[t * stride + qd + kh * hd + d];
      }
      sum += std::exp(scale * dot);
    }
    EXPECT_NEAR(whole_lse[r * shape.num_heads + hq], std::log(sum), 1e-4) << "row " << r;
  }
}

}  // namespace
}  // namespace kvasir

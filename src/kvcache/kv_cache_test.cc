#include "kvcache/kv_cache.h"

#include <cmath>
#include <random>
#include <vector>

#include "common/dtype.h"
#include "gtest/gtest.h"
#include "kernels/attention/paged_attention_ref.h"

namespace kvasir {
namespace {

KvCacheConfig SmallConfig(int blocks, KvDType dtype = KvDType::kF32) {
  KvCacheConfig c;
  c.dtype = dtype;
  c.num_layers = 2;
  c.num_kv_heads = 3;
  c.head_dim = 4;
  c.block_size = 4;
  c.num_blocks = blocks;
  return c;
}

TEST(KvCache, ReserveIsAllOrNothingAndFreeReturnsBlocks) {
  KvCache cache(SmallConfig(12));
  ASSERT_TRUE(cache.Create(7).ok());
  EXPECT_FALSE(cache.Create(7).ok());
  // 6 tables, 5 tokens each -> 2 blocks per table = 12 blocks.
  EXPECT_EQ(cache.BlocksNeeded(7, 5), 12);
  ASSERT_TRUE(cache.Reserve(7, 5).ok());
  EXPECT_EQ(cache.pool().num_free(), 0);
  ASSERT_TRUE(cache.Create(8).ok());
  absl::Status s = cache.Reserve(8, 1);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(cache.pool().num_free(), 0);
  cache.Free(7);
  EXPECT_EQ(cache.pool().num_free(), 12);
  EXPECT_TRUE(cache.Reserve(8, 1).ok());
  EXPECT_EQ(cache.pool().num_free(), 6);
  cache.Free(8);
  cache.Free(12345);  // unknown: ignored
  EXPECT_EQ(cache.pool().num_free(), 12);
}

TEST(KvCache, BookkeepingOnlyCacheAdvancesWithoutHostRows) {
  KvCacheConfig c = SmallConfig(12);
  c.host_storage = false;
  KvCache cache(c);
  EXPECT_FALSE(cache.pool().has_host_storage());
  EXPECT_EQ(cache.pool().k_data(), nullptr);
  ASSERT_TRUE(cache.Create(1).ok());
  ASSERT_TRUE(cache.Reserve(1, 5).ok());
  cache.Advance(1, 5);
  EXPECT_EQ(cache.Length(1), 5);
  EXPECT_EQ(cache.table(1, 1, 2).blocks.size(), 2u);
  EXPECT_EQ(cache.Retain(1, 0, 0, {0}).code(), absl::StatusCode::kFailedPrecondition);
  cache.Free(1);
  EXPECT_EQ(cache.pool().num_free(), 12);
}

TEST(KvCache, AppendCrossesBlocksAndReadsBack) {
  KvCache cache(SmallConfig(64));
  ASSERT_TRUE(cache.Create(1).ok());
  std::vector<float> k(10 * 4), v(10 * 4);
  for (int i = 0; i < 40; ++i) k[i] = i, v[i] = -i;
  ASSERT_TRUE(cache.Reserve(1, 3).ok());
  cache.Append(1, 1, 2, k.data(), v.data(), 3, 4);
  ASSERT_TRUE(cache.Reserve(1, 7).ok());
  cache.Append(1, 1, 2, k.data() + 12, v.data() + 12, 7, 4);
  const PageTable& t = cache.table(1, 1, 2);
  EXPECT_EQ(t.length, 10);
  EXPECT_EQ(t.blocks.size(), 3u);
  for (int pos = 0; pos < 10; ++pos) {
    const float* row = cache.pool().k_data() +
                       (static_cast<int64_t>(t.blocks[pos / 4]) * 4 + pos % 4) * 4;
    for (int i = 0; i < 4; ++i) EXPECT_EQ(row[i], pos * 4 + i);
  }
  EXPECT_EQ(cache.table(1, 0, 0).length, 0);
  EXPECT_EQ(cache.Length(1), 0);  // other tables are still empty
}

// Heads keep different numbers of tokens; attention over each head's own table equals
// attention over exactly the tokens it kept.
class KvCacheDType : public testing::TestWithParam<KvDType> {};

TEST_P(KvCacheDType, HeadsWithDifferentLengthsAttendOverTheirOwnTokens) {
  const KvDType dtype = GetParam();
  KvCacheConfig c = SmallConfig(64, dtype);
  c.num_layers = 1;
  c.num_kv_heads = 2;
  KvCache cache(c);
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  const int n = 11, d = 4;
  std::vector<float> k(n * d), v(n * d), q(d);
  for (auto& x : k) x = nd(rng);
  for (auto& x : v) x = nd(rng);
  for (auto& x : q) x = nd(rng);
  // What the pool stores: bf16 rounds each element (round to nearest even).
  std::vector<float> ks = k, vs = v;
  if (dtype == KvDType::kBF16) {
    for (auto& x : ks) x = BF16ToF32(F32ToBF16(x));
    for (auto& x : vs) x = BF16ToF32(F32ToBF16(x));
  }
  ASSERT_TRUE(cache.Create(5).ok());
  ASSERT_TRUE(cache.Reserve(5, n).ok());
  for (int h = 0; h < 2; ++h) cache.Append(5, 0, h, k.data(), v.data(), n, d);
  int before = cache.pool().num_free();
  std::vector<int32_t> keep = {0, 1, 9, 10};
  ASSERT_TRUE(cache.Retain(5, 0, 1, keep).ok());
  EXPECT_EQ(cache.table(5, 0, 0).length, n);
  EXPECT_EQ(cache.table(5, 0, 1).length, 4);
  EXPECT_EQ(cache.pool().num_free(), before + 2);  // 3 blocks -> 1
  EXPECT_FALSE(cache.Retain(5, 0, 1, {3, 2}).ok());
  EXPECT_FALSE(cache.Retain(5, 0, 1, {0, 4}).ok());

  for (int h = 0; h < 2; ++h) {
    const PageTable& t = cache.table(5, 0, h);
    float o[4], lse;
    PagedAttentionParams p;
    p.k_pool = cache.pool().k_data();
    p.v_pool = cache.pool().v_data();
    p.k_pool_bf16 = cache.pool().k_bf16();
    p.v_pool_bf16 = cache.pool().v_bf16();
    ASSERT_EQ(p.k_pool == nullptr, dtype == KvDType::kBF16);
    p.block_table = t.blocks.data();
    p.block_size = c.block_size;
    p.head_dim = d;
    p.end = t.length;
    p.q = q.data();
    p.scale = 0.5f;
    p.o = o;
    p.lse = &lse;
    PagedPartialAttentionRef(p);
    std::vector<int> idx;
    if (h == 0) {
      for (int i = 0; i < n; ++i) idx.push_back(i);
    } else {
      idx.assign(keep.begin(), keep.end());
    }
    double m = -INFINITY;
    std::vector<double> s;
    for (int i : idx) {
      double acc = 0;
      for (int j = 0; j < d; ++j) acc += q[j] * ks[i * d + j];
      s.push_back(acc * 0.5);
      m = std::max(m, s.back());
    }
    double l = 0;
    std::vector<double> ref(d, 0.0);
    for (size_t a = 0; a < idx.size(); ++a) l += std::exp(s[a] - m);
    for (size_t a = 0; a < idx.size(); ++a)
      for (int j = 0; j < d; ++j) ref[j] += std::exp(s[a] - m) / l * vs[idx[a] * d + j];
    for (int j = 0; j < d; ++j) EXPECT_NEAR(o[j], ref[j], 1e-5) << "head " << h;
    EXPECT_NEAR(lse, m + std::log(l), 1e-5);
  }
  // Retain moved whole rows: the kept tokens read back exactly as stored.
  const PageTable& t1 = cache.table(5, 0, 1);
  for (size_t i = 0; i < keep.size(); ++i) {
    float kr[4], vr[4];
    cache.pool().ReadRow(t1.blocks[i / 4], static_cast<int32_t>(i % 4), kr, vr);
    for (int j = 0; j < d; ++j) {
      EXPECT_EQ(kr[j], ks[keep[i] * d + j]);
      EXPECT_EQ(vr[j], vs[keep[i] * d + j]);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(BothDTypes, KvCacheDType, testing::Values(KvDType::kF32, KvDType::kBF16),
                         [](const testing::TestParamInfo<KvDType>& i) {
                           return std::string(KvDTypeName(i.param));
                         });

TEST(KvCache, Bf16PoolHalvesTheBytesAndRoundsToNearestEven) {
  KvCache f32(SmallConfig(8)), b16(SmallConfig(8, KvDType::kBF16));
  EXPECT_EQ(f32.pool().bytes_per_block(), 2 * 4 * 4 * 4);
  EXPECT_EQ(b16.pool().bytes_per_block(), 2 * 4 * 4 * 2);
  EXPECT_EQ(b16.pool().k_data(), nullptr);
  ASSERT_NE(b16.pool().k_bf16(), nullptr);
  ASSERT_TRUE(b16.Create(1).ok());
  ASSERT_TRUE(b16.Reserve(1, 1).ok());
  // 1 + 2^-8 lies halfway between two bf16 values (1 and 1 + 2^-7): ties go to even (1.0);
  // 1 + 3 * 2^-8 rounds up to 1 + 2^-6.
  const float k[4] = {1.0f + 1.0f / 256, 1.0f + 3.0f / 256, -2.5f, 0.0f};
  const float v[4] = {3.0f, -0.0f, 1e-30f, 65504.0f};
  b16.Append(1, 0, 0, k, v, 1, 4);
  float kr[4], vr[4];
  const PageTable& t = b16.table(1, 0, 0);
  b16.pool().ReadRow(t.blocks[0], 0, kr, vr);
  EXPECT_EQ(kr[0], 1.0f);
  EXPECT_EQ(kr[1], 1.0f + 1.0f / 64);
  EXPECT_EQ(kr[2], -2.5f);
  EXPECT_EQ(vr[0], 3.0f);
  EXPECT_EQ(vr[3], 65536.0f);  // 65504 is not a bf16 value; nearest is 2^16
  EXPECT_NEAR(vr[2], 1e-30f, 1e-32f);
}

TEST(KvCache, ParsesKvDTypes) {
  EXPECT_EQ(*ParseKvDType("bf16"), KvDType::kBF16);
  EXPECT_EQ(*ParseKvDType("BFloat16"), KvDType::kBF16);
  EXPECT_EQ(*ParseKvDType("fp32"), KvDType::kF32);
  EXPECT_EQ(ParseKvDType("fp8").status().code(), absl::StatusCode::kInvalidArgument);
}


// ---- Prefix caching (block_size 4, 6 tables a sequence).

// Fills a sequence's tables with rows that encode (position, token) so sharing is visible.
void Fill(KvCache& cache, int64_t seq, const std::vector<int32_t>& tokens, int32_t from) {
  const KvCacheConfig& c = cache.config();
  const int32_t n = static_cast<int32_t>(tokens.size()) - from;
  ASSERT_TRUE(cache.Reserve(seq, n).ok());
  for (int32_t l = 0; l < c.num_layers; ++l) {
    for (int32_t h = 0; h < c.num_kv_heads; ++h) {
      std::vector<float> k(n * c.head_dim), v(n * c.head_dim);
      for (int32_t i = 0; i < n; ++i) {
        for (int32_t j = 0; j < c.head_dim; ++j) {
          k[i * c.head_dim + j] = static_cast<float>(tokens[from + i] * 100 + l * 10 + h);
          v[i * c.head_dim + j] = static_cast<float>(from + i);
        }
      }
      cache.Append(seq, l, h, k.data(), v.data(), n, c.head_dim);
    }
  }
}

KvCacheConfig PrefixConfig(int blocks) {
  KvCacheConfig c = SmallConfig(blocks);
  c.prefix_caching = true;
  return c;
}

TEST(KvCachePrefix, EqualPrefixesShareFullBlocksAndKeepTheirRows) {
  KvCache cache(PrefixConfig(60));
  const std::vector<int32_t> a = {1, 5, 9, 2, 7, 7, 3, 8, 4, 6};  // 2 full blocks + 2
  EXPECT_EQ(cache.AdoptPrefix(1, a), 0);  // nothing cached yet: creates it empty
  Fill(cache, 1, a, 0);
  cache.RegisterPrefix(1, a);
  EXPECT_EQ(cache.prefix_stats().cached_blocks, 12);  // 2 block indices x 6 tables
  // Same first 9 tokens, then different: both full blocks are shared.
  std::vector<int32_t> b = {1, 5, 9, 2, 7, 7, 3, 8, 4, 1, 1, 1};
  const int32_t free_before = cache.pool().num_free();
  EXPECT_EQ(cache.AdoptPrefix(2, b), 8);
  EXPECT_EQ(cache.Length(2), 8);
  EXPECT_EQ(cache.pool().num_free(), free_before);  // nothing new allocated
  for (int32_t l = 0; l < 2; ++l) {
    for (int32_t h = 0; h < 3; ++h) {
      EXPECT_EQ(cache.table(2, l, h).blocks[0], cache.table(1, l, h).blocks[0]);
      EXPECT_EQ(cache.table(2, l, h).blocks[1], cache.table(1, l, h).blocks[1]);
      float k[4], v[4];
      cache.pool().ReadRow(cache.table(2, l, h).blocks[1], 3, k, v);
      EXPECT_EQ(k[0], 8 * 100 + l * 10 + h);  // token 8 at position 7
      EXPECT_EQ(v[0], 7);
    }
  }
  Fill(cache, 2, b, 8);  // the rest goes into new blocks
  EXPECT_NE(cache.table(2, 0, 0).blocks[2], cache.table(1, 0, 0).blocks[2]);
  const PrefixCacheStats st = cache.prefix_stats();
  EXPECT_EQ(st.queries_tokens, 10 + 12);
  EXPECT_EQ(st.hit_tokens, 8);
  // A stream that differs in its first block shares nothing; one equal to a cached prefix
  // exactly still computes its last token.
  EXPECT_EQ(cache.AdoptPrefix(3, std::vector<int32_t>{2, 5, 9, 2, 7, 7, 3, 8, 4}), 0);
  EXPECT_EQ(cache.AdoptPrefix(4, std::vector<int32_t>{1, 5, 9, 2, 7, 7, 3, 8}), 4);
  // Compacting a sequence that shares blocks would rewrite them for everyone.
  EXPECT_EQ(cache.Retain(2, 0, 0, {0, 1}).code(), absl::StatusCode::kFailedPrecondition);
}

TEST(KvCachePrefix, IdleEntriesStayCachedUntilTheRoomIsNeededOldestFirst) {
  KvCache cache(PrefixConfig(24));  // 4 block indices of 6 tables
  const std::vector<int32_t> a = {1, 2, 3, 4, 5};     // one full block (+1)
  const std::vector<int32_t> b = {9, 9, 9, 9, 5};
  for (auto [id, t] : {std::pair{int64_t{1}, a}, std::pair{int64_t{2}, b}}) {
    cache.AdoptPrefix(id, t);
    Fill(cache, id, t, 0);
    cache.RegisterPrefix(id, t);
  }
  EXPECT_EQ(cache.pool().num_free(), 0);
  cache.Free(1);
  cache.Free(2);
  // Their partial blocks are free, their full ones cached but idle: all count as free.
  EXPECT_EQ(cache.pool().num_free(), 12);
  EXPECT_EQ(cache.NumFreeBlocks(), 24);
  EXPECT_EQ(cache.prefix_stats().idle_blocks, 12);
  // b's block was used last: a needs room, a's entry goes first.
  EXPECT_EQ(cache.AdoptPrefix(3, b), 4);
  ASSERT_TRUE(cache.Create(4).ok());
  ASSERT_TRUE(cache.Reserve(4, 9).ok());  // 3 blocks a table: 18, 12 free + a's 6
  EXPECT_EQ(cache.prefix_stats().cached_blocks, 6);
  EXPECT_EQ(cache.AdoptPrefix(5, a), 0);  // a's entry was reclaimed
  cache.Free(5);
  cache.Free(4);
  cache.Free(3);
  EXPECT_EQ(cache.NumFreeBlocks(), 24);
  EXPECT_EQ(cache.AdoptPrefix(6, b), 4);  // b's still cached
}

TEST(KvCachePrefix, ReclaimingAnEntryDropsWhatFollowsIt) {
  KvCache cache(PrefixConfig(36));
  const std::vector<int32_t> a = {1, 2, 3, 4, 5, 6, 7, 8, 9};  // 2 full blocks
  cache.AdoptPrefix(1, a);
  Fill(cache, 1, a, 0);
  cache.RegisterPrefix(1, a);
  cache.Free(1);  // 12 idle blocks, 24 free
  EXPECT_EQ(cache.prefix_stats().idle_blocks, 12);
  ASSERT_TRUE(cache.Create(2).ok());
  ASSERT_TRUE(cache.Reserve(2, 17).ok());  // 5 blocks a table: 30, so the first entry goes
  // ... and with it its child, whose blocks would be unreachable.
  EXPECT_EQ(cache.prefix_stats().cached_blocks, 0);
  EXPECT_EQ(cache.pool().num_free(), 6);
  cache.Free(2);
  EXPECT_EQ(cache.pool().num_free(), 36);
}

TEST(KvCachePrefix, EntriesInUseSurviveAndEverythingReturnsAtTheEnd) {
  KvCache cache(PrefixConfig(60));
  std::mt19937 rng(3);
  std::vector<std::vector<int32_t>> streams;
  for (int i = 0; i < 30; ++i) {
    std::vector<int32_t> t;
    const int32_t n = 2 + static_cast<int32_t>(rng() % 11);
    for (int32_t j = 0; j < n; ++j) t.push_back(static_cast<int32_t>(rng() % 2));  // many repeats
    streams.push_back(t);
  }
  std::vector<int64_t> live;
  for (int i = 0; i < 30; ++i) {
    const int64_t id = 100 + i;
    const int32_t adopted = cache.AdoptPrefix(id, streams[i]);
    const int64_t need = cache.BlocksNeeded(id, static_cast<int32_t>(streams[i].size()) - adopted);
    if (need > cache.NumFreeBlocks()) {
      cache.Free(id);
    } else {
      Fill(cache, id, streams[i], adopted);
      cache.RegisterPrefix(id, streams[i]);
      live.push_back(id);
      // Every row is the one this stream's token at that position wrote.
      for (int32_t p = 0; p < static_cast<int32_t>(streams[i].size()); ++p) {
        float k[4], v[4];
        cache.pool().ReadRow(cache.table(id, 1, 2).blocks[p / 4], p % 4, k, v);
        ASSERT_EQ(k[0], streams[i][p] * 100 + 12) << i << " " << p;
        ASSERT_EQ(v[0], p);
      }
    }
    if (live.size() > 3) {
      cache.Free(live[rng() % live.size()]);
      std::erase_if(live, [&](int64_t s) { return !cache.Contains(s); });
    }
  }
  for (int64_t id : live) cache.Free(id);
  EXPECT_EQ(cache.NumFreeBlocks(), 60);
  EXPECT_GT(cache.prefix_stats().hit_tokens, 0);
}

}  // namespace
}  // namespace kvasir

// Prefix caching through the engine on stories260K: requests that share a prompt prefix reuse
// its KV (hits counted, fewer tokens prefilled) and produce exactly the tokens they produce
// with caching off, also when they arrive together, under memory pressure with preemption and
// reclaiming, and next to a compressing kv_policy (which shares nothing).
#include "decoder/generator.h"
#include "gtest/gtest.h"
#include "model/testing_util.h"
#include "runtime/cpu/cpu_backend.h"

namespace kvasir {
namespace {

class PrefixCacheEngineTest : public testing::Stories260KTest {
 protected:
  void SetUp() override {
    Stories260KTest::SetUp();
    if (HasFatalFailure()) return;
    backend_ = std::make_unique<CpuBackend>(2);
  }
  struct Setup {
    std::unique_ptr<KvCache> cache;
    std::unique_ptr<ModelRunner> runner;
  };
  Setup Make(bool prefix_caching, int32_t blocks) {
    KvCacheConfig kc = KvCacheConfigFor(weights_->config, 16, blocks);
    kc.prefix_caching = prefix_caching;
    Setup s;
    s.cache = std::make_unique<KvCache>(kc);
    s.runner = std::make_unique<ModelRunner>(weights_.get(), backend_.get(), s.cache.get());
    return s;
  }
  // A shared prefix of about n tokens (a story the model continues), then a distinct tail.
  std::vector<GenerationRequest> Requests(int n, int count, int max_tokens) {
    Setup s = Make(false, 2000);
    GenerationRequest r;
    r.prompt = *tok_->Encode("Once upon a time, there was a little girl named Lily.", true);
    r.params.temperature = 0;
    r.params.max_tokens = n - static_cast<int>(r.prompt.size());
    r.params.ignore_eos = true;
    Generator gen(s.runner.get(), tok_.get());
    auto out = gen.Generate({r});
    EXPECT_TRUE(out.ok());
    std::vector<int32_t> prefix = r.prompt;
    prefix.insert(prefix.end(), (*out)[0].tokens.begin(), (*out)[0].tokens.end());
    const char* tails[] = {" The dog", " Tom said", " One day", " She was happy", " The sun",
                           " Mom", " A bird sang", " They ran"};
    std::vector<GenerationRequest> reqs;
    for (int i = 0; i < count; ++i) {
      GenerationRequest q;
      q.prompt = prefix;
      auto tail = tok_->Encode(tails[i % 8], false);
      q.prompt.insert(q.prompt.end(), tail->begin(), tail->end());
      q.params.temperature = 0;
      q.params.max_tokens = max_tokens;
      q.params.ignore_eos = true;
      reqs.push_back(std::move(q));
    }
    return reqs;
  }
  static std::vector<std::vector<int32_t>> Tokens(const std::vector<GenerationResult>& out) {
    std::vector<std::vector<int32_t>> t;
    for (const GenerationResult& r : out) t.push_back(r.tokens);
    return t;
  }
  std::unique_ptr<CpuBackend> backend_;
};

TEST_F(PrefixCacheEngineTest, SharedPrefixIsReusedAndOutputsAreUnchanged) {
  const std::vector<GenerationRequest> reqs = Requests(200, 6, 40);
  Setup off = Make(false, 2000), on = Make(true, 2000);
  Generator goff(off.runner.get(), tok_.get(), GeneratorOptions{64, 64});
  Generator gon(on.runner.get(), tok_.get(), GeneratorOptions{64, 64});
  auto want = goff.Generate(reqs);
  ASSERT_TRUE(want.ok()) << want.status();
  EXPECT_EQ(off.runner->kv()->Usage().prefix_hit_tokens, 0);
  // One request first (it caches the prefix), then all six: each finds the prefix.
  auto first = gon.Generate({reqs[0]});
  ASSERT_TRUE(first.ok());
  EXPECT_EQ((*first)[0].tokens, (*want)[0].tokens);
  const KvUsage u0 = on.runner->kv()->Usage();
  EXPECT_EQ(u0.prefix_hit_tokens, 0);
  EXPECT_EQ(u0.prefix_queries_tokens, static_cast<int64_t>(reqs[0].prompt.size()));
  const int64_t steps_off = goff.last_stats().steps;
  auto got = gon.Generate(reqs);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(Tokens(*got), Tokens(*want));
  const KvUsage u = on.runner->kv()->Usage();
  // The prefix's full blocks (12 of 16 tokens: 192 of ~200) hit for all six.
  EXPECT_GE(u.prefix_hit_tokens, 6 * 192);
  EXPECT_LT(gon.last_stats().steps, steps_off);  // less prefill
  // All blocks are back or idle in the cache (reclaimable).
  EXPECT_EQ(u.blocks_used, 0);
}

TEST_F(PrefixCacheEngineTest, ArrivingTogetherUnderMemoryPressureStillMatches) {
  const std::vector<GenerationRequest> reqs = Requests(120, 8, 60);
  // 8 requests of ~125 + 60 tokens need 12 blocks per table each; 4 x 12 x 14 blocks hold
  // about 3 at once without sharing: preemption and reclaiming happen.
  const int32_t tables = weights_->config.num_layers * weights_->config.num_kv_heads;
  Setup off = Make(false, tables * 40), on = Make(true, tables * 40);
  Generator goff(off.runner.get(), tok_.get(), GeneratorOptions{48, 8});
  Generator gon(on.runner.get(), tok_.get(), GeneratorOptions{48, 8});
  auto want = goff.Generate(reqs);
  ASSERT_TRUE(want.ok()) << want.status();
  auto got = gon.Generate(reqs);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(Tokens(*got), Tokens(*want));
  EXPECT_GT(goff.last_stats().preemptions, 0);
  EXPECT_GT(on.runner->kv()->Usage().prefix_hit_tokens, 0);
  EXPECT_EQ(on.runner->kv()->Usage().blocks_used, 0);
  EXPECT_EQ(on.cache->pool().num_free() + on.cache->prefix_stats().idle_blocks, tables * 40);
}

TEST_F(PrefixCacheEngineTest, CompressingPolicyNeitherSharesNorCaches) {
  std::vector<GenerationRequest> reqs = Requests(200, 2, 20);
  Setup on = Make(true, 2000);
  Generator gen(on.runner.get(), tok_.get(), GeneratorOptions{64, 64});
  ASSERT_TRUE(gen.Generate({reqs[0]}).ok());  // caches the prefix
  const int64_t hits = on.runner->kv()->Usage().prefix_hit_tokens;
  KvPolicy p;
  p.kind = KvPolicyKind::kSnapKv;
  p.budget_fraction = 0.5;
  p.window = 16;
  reqs[1].kv_policy = p;
  auto out = gen.Generate({reqs[1]});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(on.runner->kv()->Usage().prefix_hit_tokens, hits);
  EXPECT_GT(on.runner->kv()->Usage().evicted_blocks_total, 0);  // it compacted its own blocks
  // The cached prefix is intact: a plain request still hits it.
  ASSERT_TRUE(gen.Generate({reqs[0]}).ok());
  EXPECT_GT(on.runner->kv()->Usage().prefix_hit_tokens, hits);
}

}  // namespace
}  // namespace kvasir

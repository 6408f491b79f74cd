// Head-aware KV eviction (kv_policy) through the engine on stories260K: `full` and a whole
// budget change nothing; a compressed prompt holds its budget per head, frees its blocks for
// real, keeps every compressed head within cap + one block while decoding, and gives its
// blocks back at the end.
#include <numeric>

#include "decoder/generator.h"
#include "gtest/gtest.h"
#include "model/testing_util.h"
#include "runtime/cpu/cpu_backend.h"

namespace kvasir {
namespace {

class KvPolicyEngineTest : public testing::Stories260KTest {
 protected:
  void SetUp() override {
    Stories260KTest::SetUp();
    if (HasFatalFailure()) return;
    backend_ = std::make_unique<CpuBackend>(2);
    cache_ = std::make_unique<KvCache>(KvCacheConfigFor(weights_->config, 16, 4000));
    runner_ = std::make_unique<ModelRunner>(weights_.get(), backend_.get(), cache_.get());
  }
  // A prompt of about n tokens: a story the model itself continues.
  std::vector<int32_t> LongPrompt(int n) {
    GenerationRequest r;
    r.prompt = *tok_->Encode("Once upon a time, there was a little girl named Lily.", true);
    r.params.temperature = 0;
    r.params.max_tokens = n - static_cast<int>(r.prompt.size());
    r.params.ignore_eos = true;
    Generator gen(runner_.get(), tok_.get());
    auto out = gen.Generate({r});
    EXPECT_TRUE(out.ok());
    std::vector<int32_t> ids = r.prompt;
    ids.insert(ids.end(), (*out)[0].tokens.begin(), (*out)[0].tokens.end());
    return ids;
  }
  static KvPolicy Policy(KvPolicyKind kind, double budget) {
    KvPolicy p;
    p.kind = kind;
    p.budget_fraction = budget;
    p.sink = 4;
    p.recent = 32;
    p.window = 16;
    return p;
  }
  std::unique_ptr<CpuBackend> backend_;
  std::unique_ptr<KvCache> cache_;
  std::unique_ptr<ModelRunner> runner_;
};

TEST_F(KvPolicyEngineTest, FullPolicyAndAWholeBudgetAreIdentity) {
  std::vector<int32_t> prompt = LongPrompt(200);
  GenerationRequest plain;
  plain.prompt = prompt;
  plain.params.temperature = 0;
  plain.params.max_tokens = 60;
  plain.params.ignore_eos = true;
  GenerationRequest full = plain, whole = plain;
  full.kv_policy = Policy(KvPolicyKind::kFull, 0.1);
  whole.kv_policy = Policy(KvPolicyKind::kTaskKv, 1.0);
  Generator gen(runner_.get(), tok_.get(), GeneratorOptions{64, 256});
  auto out = gen.Generate({plain, full, whole});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ((*out)[1].tokens, (*out)[0].tokens);
  EXPECT_EQ((*out)[2].tokens, (*out)[0].tokens);
  EXPECT_EQ((*out)[2].text, (*out)[0].text);
  // Everything but the last sampled token is in the KV.
  for (int i = 0; i < 3; ++i) EXPECT_EQ((*out)[i].kv_tokens_kept, 200 + 60 - 1) << i;
  EXPECT_EQ(runner_->kv()->Usage().evicted_blocks_total, 0);
}

TEST_F(KvPolicyEngineTest, CompressedPromptHoldsItsBudgetAndFreesBlocks) {
  const ModelConfig& c = weights_->config;
  const std::vector<int32_t> prompt = LongPrompt(320);
  const int32_t P = static_cast<int32_t>(prompt.size());
  auto* local = dynamic_cast<LocalAttention*>(runner_->attention());
  ASSERT_NE(local, nullptr);
  int64_t seq = 100;
  for (KvPolicyKind kind : {KvPolicyKind::kStreaming, KvPolicyKind::kSnapKv,
                            KvPolicyKind::kAdaKv, KvPolicyKind::kTaskKv}) {
    SCOPED_TRACE(std::string(KvPolicyName(kind)));
    const KvPolicy policy = Policy(kind, 0.4);
    const int32_t B = policy.BudgetFor(P);
    ++seq;
    const int64_t evicted_before = runner_->kv()->Usage().evicted_blocks_total;
    // Prefill in chunks of 100 (the window's queries span two of them), then decode.
    ASSERT_TRUE(runner_->kv()->Grow(seq, 0).ok());
    for (int32_t at = 0; at < P; at += 100) {
      const int32_t n = std::min(100, P - at);
      SequenceInput in{seq, std::vector<int32_t>(prompt.begin() + at, prompt.begin() + at + n),
                       at, at + n == P, false};
      in.kv_policy = &policy;
      in.prompt_len = P;
      ASSERT_TRUE(runner_->kv()->Grow(seq, n).ok());
      ASSERT_TRUE(runner_->Forward({in}).ok());
    }
    int64_t blocks = 0, tokens = 0;
    for (int32_t l = 0; l < c.num_layers; ++l) {
      for (int32_t kh = 0; kh < c.num_kv_heads; ++kh) {
        const HeadRetention* r = local->retention(seq, l, kh);
        ASSERT_NE(r, nullptr);
        const PageTable& t = cache_->table(seq, l, kh);
        if (r->cap >= 0) {
          EXPECT_EQ(t.length, r->cap) << l << " " << kh;
        }
        // adakv and taskkv spread their middle tokens unevenly over heads by design.
        if (kind == KvPolicyKind::kStreaming || kind == KvPolicyKind::kSnapKv) {
          EXPECT_LE(t.length, B);
        }
        blocks += t.blocks.size();
        tokens += t.length;
      }
    }
    const int64_t tables = int64_t{c.num_layers} * c.num_kv_heads;
    const int64_t full_blocks = tables * ((P + 15) / 16);
    EXPECT_LE(tokens, tables * B);
    EXPECT_LE(blocks * 100, full_blocks * 45) << blocks << " of " << full_blocks;
    EXPECT_GT(runner_->kv()->Usage().evicted_blocks_total, evicted_before);
    EXPECT_EQ(runner_->kv()->KvTokensHeld(seq), tokens / tables);
    // Decode 60 tokens: compressed heads stay within their cap plus one block.
    int32_t next = prompt.back();
    for (int32_t step = 0; step < 60; ++step) {
      ASSERT_TRUE(runner_->kv()->Grow(seq, 1).ok());
      SequenceInput in{seq, {next}, P + step, true, false};
      in.kv_policy = &policy;
      in.prompt_len = P;
      auto out = runner_->Forward({in});
      ASSERT_TRUE(out.ok()) << out.status();
      const float* row = out->row(0);
      next = static_cast<int32_t>(std::max_element(row, row + c.vocab_size) - row);
      for (int32_t l = 0; l < c.num_layers; ++l) {
        for (int32_t kh = 0; kh < c.num_kv_heads; ++kh) {
          const HeadRetention* r = local->retention(seq, l, kh);
          if (r->cap >= 0) {
            EXPECT_LT(cache_->table(seq, l, kh).length, r->cap + 16);
          }
        }
      }
    }
    runner_->kv()->Release(seq);
    EXPECT_EQ(cache_->pool().num_free(), 4000);
  }
}

TEST_F(KvPolicyEngineTest, CompressedRequestsRunThroughTheEngineAndStayDeterministic) {
  GenerationRequest r;
  r.prompt = LongPrompt(300);
  r.params.temperature = 0;
  r.params.max_tokens = 40;
  r.params.ignore_eos = true;
  r.kv_policy = Policy(KvPolicyKind::kTaskKv, 0.2);
  Generator gen(runner_.get(), tok_.get(), GeneratorOptions{64, 256});
  auto a = gen.Generate({r, r});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ((*a)[0].tokens, (*a)[1].tokens);
  EXPECT_EQ((*a)[0].tokens.size(), 40u);
  EXPECT_GT((*a)[0].kv_tokens_kept, 0);
  EXPECT_LT((*a)[0].kv_tokens_kept, 300 * 40 / 100);  // 20% of the prompt plus a slack
  EXPECT_EQ(cache_->pool().num_free(), 4000);
  GenerationRequest bad = r;
  bad.kv_policy->pooling = 2;
  EXPECT_FALSE(gen.Generate({bad}).ok());
}

}  // namespace
}  // namespace kvasir

#include "decoder/generator.h"

#include "decoder/generated_text.h"

#include "gtest/gtest.h"
#include "model/testing_util.h"
#include "runtime/cpu/cpu_backend.h"

namespace kvasir {
namespace {

class GeneratorTest : public testing::Stories260KTest {
 protected:
  void SetUp() override {
    Stories260KTest::SetUp();
    if (HasFatalFailure()) return;
    backend_ = std::make_unique<CpuBackend>(2);
    cache_ = std::make_unique<KvCache>(KvCacheConfigFor(weights_->config, 16, 4000));
    runner_ = std::make_unique<ModelRunner>(weights_.get(), backend_.get(), cache_.get());
  }
  GenerationRequest Req(const std::string& prompt, int max_tokens) {
    GenerationRequest r;
    r.prompt = *tok_->Encode(prompt, true);
    r.params.temperature = 0;
    r.params.max_tokens = max_tokens;
    return r;
  }
  std::unique_ptr<CpuBackend> backend_;
  std::unique_ptr<KvCache> cache_;
  std::unique_ptr<ModelRunner> runner_;
};

TEST_F(GeneratorTest, BatchOfRequestsEqualsEachAlone) {
  std::vector<GenerationRequest> reqs = {Req("Once upon a time", 50), Req("Tom had a big dog", 30),
                                         Req("The sun", 64)};
  reqs[1].params.temperature = 0.8f;
  reqs[1].params.seed = 3;
  Generator gen(runner_.get(), tok_.get(), GeneratorOptions{7, 256});
  auto together = gen.Generate(reqs);
  ASSERT_TRUE(together.ok()) << together.status();
  for (size_t i = 0; i < reqs.size(); ++i) {
    auto alone = gen.Generate({reqs[i]});
    ASSERT_TRUE(alone.ok());
    EXPECT_EQ((*together)[i].tokens, (*alone)[0].tokens) << i;
    EXPECT_EQ((*together)[i].text, (*alone)[0].text) << i;
    // The text continues the prompt: prompt text + text == the decoded whole.
    std::vector<int32_t> whole = reqs[i].prompt;
    whole.insert(whole.end(), (*alone)[0].tokens.begin(), (*alone)[0].tokens.end());
    EXPECT_EQ(tok_->Decode(reqs[i].prompt) + (*together)[i].text, tok_->Decode(whole)) << i;
  }
  EXPECT_EQ((*together)[0].finish_reason, "length");
  EXPECT_EQ((*together)[0].tokens.size(), 50u);
  EXPECT_EQ(cache_->pool().num_free(), 4000);
}

TEST_F(GeneratorTest, StopStringsCutTheTextAndStreamEqualsResult) {
  GenerationRequest r = Req("Once upon a time", 100);
  r.params.stop = {"Lily"};
  std::string streamed;
  Generator gen(runner_.get(), tok_.get());
  auto res = gen.Generate({r}, [&](size_t, int32_t, std::string_view t) { streamed += t; });
  ASSERT_TRUE(res.ok());
  EXPECT_EQ((*res)[0].text, ", there was a little girl named ");
  EXPECT_EQ(streamed, (*res)[0].text);
  EXPECT_EQ((*res)[0].finish_reason, "stop");
}

TEST_F(GeneratorTest, StopTokenIdsEosAndLogprobs) {
  GenerationRequest base = Req("Once upon a time", 20);
  Generator gen(runner_.get(), tok_.get());
  auto full = gen.Generate({base});
  ASSERT_TRUE(full.ok());
  const auto& toks = (*full)[0].tokens;
  ASSERT_GE(toks.size(), 5u);
  GenerationRequest r = base;
  r.params.stop_token_ids = {toks[3]};
  r.params.logprobs = 3;
  auto cut = gen.Generate({r});
  ASSERT_TRUE(cut.ok());
  auto first = std::find(toks.begin(), toks.end(), toks[3]) - toks.begin();
  EXPECT_EQ((*cut)[0].tokens.size(), static_cast<size_t>(first + 1));
  EXPECT_EQ((*cut)[0].finish_reason, "stop");
  for (const SampleResult& s : (*cut)[0].samples) {
    ASSERT_EQ(s.top.size(), 3u);
    EXPECT_EQ(s.top[0].token, s.token);  // greedy picks the most likely
    EXPECT_LE(s.logprob, 0.0f);
    EXPECT_GE(s.top[0].logprob, s.top[1].logprob);
  }
  // Generation runs to the end of a story (BOS) unless ignore_eos.
  GenerationRequest longer = Req("Once upon a time", 400);
  auto story = gen.Generate({longer});
  ASSERT_TRUE(story.ok());
  if ((*story)[0].finish_reason == "stop") {
    EXPECT_EQ((*story)[0].tokens.back(), 1);
  }
  longer.params.ignore_eos = true;
  longer.params.max_tokens = 600;
  auto to_ctx = gen.Generate({longer});
  ASSERT_TRUE(to_ctx.ok());
  EXPECT_EQ((*to_ctx)[0].finish_reason, "length");
  // prompt + output fill the context exactly (vLLM's max_model_len rule).
  EXPECT_EQ((*to_ctx)[0].tokens.size() + longer.prompt.size(), 512u);
}

// A KV pool far smaller than the batch needs: the scheduler preempts and recomputes, and every
// greedy output equals the run with room to spare. (Seeded sampling keeps its RNG state across a
// preemption, but recomputed logits come from a prefill instead of decodes and differ in the
// last float bits, which can flip a draw near a boundary; so only greedy is compared.)
TEST_F(GeneratorTest, PreemptionByRecomputeKeepsOutputsIdentical) {
  std::vector<GenerationRequest> reqs;
  const char* prompts[] = {"Once upon a time", "Tom had a big dog", "The sun", "Lily and Ben",
                           "One day", "A little bird"};
  for (int i = 0; i < 6; ++i) {
    reqs.push_back(Req(prompts[i], 90 + 7 * i));
    reqs.back().params.ignore_eos = true;
  }
  Generator roomy(runner_.get(), tok_.get(), GeneratorOptions{64, 256});
  auto want = roomy.Generate(reqs);
  ASSERT_TRUE(want.ok()) << want.status();
  EXPECT_EQ(roomy.last_stats().preemptions, 0);

  // 5 layers x 4 kv heads: 20 blocks per 16 tokens; 400 blocks hold 320 tokens in all, while
  // the six requests need about 680.
  const ModelConfig& c = weights_->config;
  KvCache small({c.num_layers, c.num_kv_heads, c.head_dim, 16, 400});
  ModelRunner runner(weights_.get(), backend_.get(), &small);
  Generator tight(&runner, tok_.get(), GeneratorOptions{64, 256});
  auto got = tight.Generate(reqs);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_GT(tight.last_stats().preemptions, 0);
  for (size_t i = 0; i < reqs.size(); ++i) {
    EXPECT_EQ((*got)[i].tokens, (*want)[i].tokens) << i;
    EXPECT_EQ((*got)[i].text, (*want)[i].text) << i;
    EXPECT_EQ((*got)[i].finish_reason, "length");
  }
  EXPECT_EQ(small.pool().num_free(), 400);
}

TEST_F(GeneratorTest, RejectsInvalidRequestsUpFront) {
  Generator gen(runner_.get(), tok_.get());
  GenerationRequest r = Req("hi", 5);
  r.params.top_p = 0;
  EXPECT_EQ(gen.Generate({Req("ok", 3), r}).status().code(), absl::StatusCode::kInvalidArgument);
  GenerationRequest e;
  EXPECT_FALSE(gen.Generate({e}).ok());
  EXPECT_EQ(cache_->num_sequences(), 0u);
}

// The detokenizer + stop strings shared by the router and the Generator.
TEST_F(GeneratorTest, GeneratedTextStopsAndFlushes) {
  const std::string text = "Once upon a time, there was a little girl named Lily.";
  const std::vector<int32_t> ids = *tok_->Encode(text, false);
  {
    GeneratedText g(*tok_, {});
    std::string out;
    for (int32_t id : ids) {
      auto r = g.Push(id);
      EXPECT_FALSE(r.stopped);
      out += r.text;
    }
    out += g.Finish();
    EXPECT_EQ(out, tok_->Decode(ids));
  }
  {
    GeneratedText g(*tok_, {"girl", ", there"});
    std::string out;
    size_t pushed = 0;
    for (int32_t id : ids) {
      ++pushed;
      auto r = g.Push(id);
      out += r.text;
      if (r.stopped) break;
    }
    EXPECT_TRUE(g.stopped());
    EXPECT_LT(pushed, ids.size());
    EXPECT_EQ(out, "Once upon a time");  // the earliest stop string, itself not shown
    EXPECT_EQ(g.Finish(), "");
    EXPECT_TRUE(g.Push(ids.back()).stopped);
  }
  {
    // A held-back possible stop prefix that never completes is released at the end.
    GeneratedText g(*tok_, {"Lily!"});
    std::string out;
    for (int32_t id : ids) out += g.Push(id).text;
    EXPECT_FALSE(g.stopped());
    out += g.Finish();
    EXPECT_EQ(out, tok_->Decode(ids));
  }
}

}  // namespace
}  // namespace kvasir

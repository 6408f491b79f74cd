#include "attention/distributed_attention.h"

#include <cmath>
#include <limits>

#include "decoder/generator.h"
#include "gtest/gtest.h"
#include "kvcache/kv_directory.h"
#include "model/testing_util.h"
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

// ---- stories260K end to end: distributed over two small shards == one local cache.
class DistributedModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::TestModel m = testing::LoadStories260K();
    ASSERT_TRUE(m.weights && m.tokenizer);
    weights_ = std::move(m.weights);
    tok_ = std::move(m.tokenizer);
    const ModelConfig& c = weights_->config;
    shape_ = {c.num_heads, c.num_kv_heads, c.head_dim, c.num_layers};
    backend_ = std::make_unique<CpuBackend>(2);
  }
  GenerationRequest Req(const std::string& prompt, int max_tokens) {
    GenerationRequest r;
    r.prompt = *tok_->Encode(prompt, true);
    r.params.temperature = 0;
    r.params.max_tokens = max_tokens;
    r.params.ignore_eos = true;
    return r;
  }
  std::vector<GenerationResult> RunLocal(const std::vector<GenerationRequest>& reqs) {
    const ModelConfig& c = weights_->config;
    KvCache cache({c.num_layers, c.num_kv_heads, c.head_dim, 16, 20000});
    ModelRunner runner(weights_.get(), backend_.get(), &cache);
    Generator gen(&runner, tok_.get(), GeneratorOptions{13, 256});
    auto r = gen.Generate(reqs);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : std::vector<GenerationResult>{};
  }
  std::unique_ptr<ModelWeights> weights_;
  std::unique_ptr<Tokenizer> tok_;
  std::unique_ptr<CpuBackend> backend_;
  AttentionShape shape_;
};

TEST_F(DistributedModelTest, SequenceSpanningTwoWorkersGivesIdenticalTokens) {
  // 5 layers x 4 kv heads = 20 blocks per 16 tokens: 220 blocks hold 176 tokens per worker, so
  // a 300-token sequence needs both.
  AttentionShard a(shape_, 16, 220, backend_.get()), b(shape_, 16, 240, backend_.get());
  LocalSegmentDirectory dir({"a", "b"}, {&a, &b});
  DistributedAttention dist(shape_, &dir, dir.Links());
  ModelRunner runner(weights_.get(), backend_.get(), &dist);

  std::vector<GenerationRequest> reqs = {Req("Once upon a time", 290)};
  std::vector<GenerationResult> want = RunLocal(reqs);
  ASSERT_EQ(want.size(), 1u);

  // Watch the placement while the sequence runs.
  Generator gen(&runner, tok_.get(), GeneratorOptions{13, 256});
  size_t segments_seen = 0;
  auto got = gen.Generate(reqs, [&](size_t, int32_t, std::string_view) {
    if (const auto* s = dist.segments(1)) segments_seen = std::max(segments_seen, s->size());
  });
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(segments_seen, 2u);
  EXPECT_EQ((*got)[0].tokens, want[0].tokens);
  EXPECT_EQ((*got)[0].text, want[0].text);
  EXPECT_EQ(a.Info().free_blocks, 220);
  EXPECT_EQ(b.Info().free_blocks, 240);
  EXPECT_EQ(dir.Usage().blocks_used, 0);
}

TEST_F(DistributedModelTest, ManySequencesOverTwoWorkersEqualLocal) {
  AttentionShard a(shape_, 4, 3000, backend_.get()), b(shape_, 4, 3000, backend_.get());
  LocalSegmentDirectory dir({"a", "b"}, {&a, &b});
  DistributedAttention dist(shape_, &dir, dir.Links(), /*key_prefix=*/3);
  ModelRunner runner(weights_.get(), backend_.get(), &dist);
  std::vector<GenerationRequest> reqs;
  const char* prompts[] = {"Tom had a big dog", "The sun", "Lily and Ben", "One day",
                           "A little bird", "Sam went to the park"};
  for (int i = 0; i < 6; ++i) reqs.push_back(Req(prompts[i], 40 + 23 * i));
  reqs[2].params.temperature = 0.9f;
  reqs[2].params.seed = 11;
  std::vector<GenerationResult> want = RunLocal(reqs);
  Generator gen(&runner, tok_.get(), GeneratorOptions{13, 256});
  auto got = gen.Generate(reqs);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ((*got)[i].tokens, want[i].tokens) << i;
  EXPECT_EQ(a.Info().num_segments + b.Info().num_segments, 0);
}

// Logits, not only argmax: teacher-forced prompt logits over a split sequence match.
TEST_F(DistributedModelTest, PromptLogitsMatchLocal) {
  const ModelConfig& c = weights_->config;
  std::vector<int32_t> ids = *tok_->Encode("Once upon a time there was a little girl", true);
  KvCache cache({c.num_layers, c.num_kv_heads, c.head_dim, 1, 2000});
  ModelRunner local(weights_.get(), backend_.get(), &cache);
  ASSERT_TRUE(cache.Create(1).ok());
  SequenceInput in{1, ids, 0, true, true};
  auto want = local.Forward({in});
  ASSERT_TRUE(want.ok());

  // Block size 1 and tiny shards: the prompt is cut into three segments over three workers.
  const int32_t n = static_cast<int32_t>(ids.size());
  ASSERT_GE(n, 12);
  const int64_t per = 20 * ((n + 2) / 3 + 1);  // 20 blocks per token (5 layers x 4 kv heads)
  AttentionShard a(shape_, 1, per, backend_.get()), b(shape_, 1, per, backend_.get()),
      d(shape_, 1, per, backend_.get());
  LocalSegmentDirectory dir({"a", "b", "d"}, {&a, &b, &d});
  DistributedAttention dist(shape_, &dir, dir.Links());
  ModelRunner runner(weights_.get(), backend_.get(), &dist);
  ASSERT_TRUE(dist.Grow(1, n).ok());
  ASSERT_EQ(dist.segments(1)->size(), 3u);
  // Two chunks so a chunk straddles a segment boundary.
  std::vector<int32_t> head(ids.begin(), ids.begin() + 5), tail(ids.begin() + 5, ids.end());
  ASSERT_TRUE(runner.Forward({{1, head, 0, true, true}}).ok());
  auto got = runner.Forward({{1, tail, 5, true, true}});
  ASSERT_TRUE(got.ok()) << got.status();
  const int64_t V = c.vocab_size;
  double max_diff = 0;
  for (size_t t = 5; t < ids.size(); ++t) {
    for (int64_t v = 0; v < V; ++v) {
      max_diff = std::max<double>(
          max_diff, std::fabs(want->row(static_cast<int32_t>(t))[v] -
                              got->row(static_cast<int32_t>(t - 5))[v]));
    }
  }
  EXPECT_LT(max_diff, 1e-4);
  dist.Release(1);
  EXPECT_EQ(a.Info().free_blocks + b.Info().free_blocks + d.Info().free_blocks, 3 * per);
}

}  // namespace
}  // namespace kvasir

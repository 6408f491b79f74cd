// End-to-end checks of the CPU engine against an independent float64 numpy reference
// (tests/reference/llama2c_numpy_reference.py, fixture tests/data/stories260K_reference.json).
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include "gtest/gtest.h"
#include "decoder/generator.h"
#include "model/model_runner.h"
#include "model/testing_util.h"
#include "model/weights.h"
#include "nlohmann/json.hpp"
#include "runtime/cpu/cpu_backend.h"

namespace kvasir {
namespace {

namespace fs = std::filesystem;

struct Reference {
  std::vector<int32_t> prompt, generated;
  std::vector<std::vector<double>> prompt_logits;
};

Reference LoadReference() {
  std::ifstream in("tests/data/stories260K_reference.json");
  EXPECT_TRUE(in.good()) << "run tests from the source root";
  nlohmann::json j = nlohmann::json::parse(in);
  Reference r;
  r.prompt = j["prompt_ids"].get<std::vector<int32_t>>();
  r.generated = j["generated"].get<std::vector<int32_t>>();
  r.prompt_logits = j["prompt_logits"].get<std::vector<std::vector<double>>>();
  return r;
}

KvCacheConfig CacheFor(const ModelConfig& c, int32_t blocks, int32_t block_size = 16) {
  return KvCacheConfigFor(c, block_size, blocks);
}

class Stories260K : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::Stories260KDir();
    ASSERT_FALSE(dir_.empty()) << "../shared/models/stories260K not found";
    auto w = LoadModelWeights(dir_, LoadOptions{});
    ASSERT_TRUE(w.ok()) << w.status();
    weights_ = std::move(*w);
    ref_ = LoadReference();
  }

  std::vector<int32_t> Greedy(const ModelWeights& w, int32_t block_size, int32_t split,
                              int32_t max_batch_tokens) {
    CpuBackend backend(2);
    const int32_t blocks = 40 * ((320 + block_size - 1) / block_size + 1);
    KvCache cache(CacheFor(w.config, blocks, block_size));
    ModelRunner runner(&w, &backend, &cache);
    runner.set_attention_split(split);
    GeneratorOptions go;
    go.max_batch_tokens = max_batch_tokens;
    Generator gen(&runner, nullptr, go);
    GenerationRequest req;
    req.prompt = ref_.prompt;
    req.params.temperature = 0;
    req.params.max_tokens = static_cast<int32_t>(ref_.generated.size());
    auto res = gen.Generate({req});
    EXPECT_TRUE(res.ok()) << res.status();
    EXPECT_EQ(cache.pool().num_free(), blocks) << "blocks leaked";
    return res.ok() ? (*res)[0].tokens : std::vector<int32_t>{};
  }

  std::string dir_;
  std::unique_ptr<ModelWeights> weights_;
  Reference ref_;
};

TEST_F(Stories260K, PromptLogitsMatchNumpyReference) {
  CpuBackend backend(2);
  KvCache cache(CacheFor(weights_->config, 200));
  ModelRunner runner(weights_.get(), &backend, &cache);
  ASSERT_TRUE(cache.Create(1).ok());
  SequenceInput in;
  in.seq_id = 1;
  in.tokens = ref_.prompt;
  in.all_logits = true;
  auto out = runner.Forward({in});
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->num_rows[0], static_cast<int32_t>(ref_.prompt.size()));
  double max_diff = 0;
  for (size_t t = 0; t < ref_.prompt.size(); ++t) {
    for (int v = 0; v < weights_->config.vocab_size; ++v) {
      max_diff = std::max(max_diff, std::fabs(out->row(t)[v] - ref_.prompt_logits[t][v]));
    }
  }
  EXPECT_LT(max_diff, 1e-4);
}

TEST_F(Stories260K, GreedyMatchesNumpyReferenceTokenForToken) {
  EXPECT_EQ(Greedy(*weights_, 16, 0, 512), ref_.generated);
}

// The same tokens when attention is cut into segments and merged (DistAttention), with page
// size 1, and with prefill chunked into 2-token pieces.
TEST_F(Stories260K, SplitAttentionPagingAndChunkingDoNotChangeTokens) {
  EXPECT_EQ(Greedy(*weights_, 16, 7, 512), ref_.generated);
  EXPECT_EQ(Greedy(*weights_, 1, 0, 512), ref_.generated);
  EXPECT_EQ(Greedy(*weights_, 16, 0, 2), ref_.generated);
}

TEST_F(Stories260K, ConvertedHfModelGivesIdenticalLogitsAndTokens) {
  testing::TempDir tmp;
  ASSERT_TRUE(WriteHfModel(*weights_, tmp.path(), DType::kF32).ok());
  auto hf = LoadModelWeights(tmp.path(), LoadOptions{});
  ASSERT_TRUE(hf.ok()) << hf.status();
  EXPECT_EQ((*hf)->format, ModelFormat::kHf);
  EXPECT_EQ((*hf)->config.rope_style, RopeStyle::kHalf);
  EXPECT_EQ((*hf)->config.eos_token_ids, std::vector<int32_t>{1});
  EXPECT_EQ(Greedy(**hf, 16, 0, 512), ref_.generated);

  // bf16 storage: close, not exact.
  testing::TempDir tmp16;
  ASSERT_TRUE(WriteHfModel(*weights_, tmp16.path(), DType::kBF16).ok());
  auto bf = LoadModelWeights(tmp16.path(), LoadOptions{});
  ASSERT_TRUE(bf.ok()) << bf.status();
  EXPECT_EQ((*bf)->config.dtype, DType::kBF16);
  CpuBackend backend(1);
  KvCache cache(CacheFor((*bf)->config, 100));
  ModelRunner runner(bf->get(), &backend, &cache);
  ASSERT_TRUE(cache.Create(3).ok());
  SequenceInput in{3, ref_.prompt, 0, true, false};
  auto out = runner.Forward({in});
  ASSERT_TRUE(out.ok());
  double max_diff = 0;
  for (int v = 0; v < (*bf)->config.vocab_size; ++v) {
    max_diff = std::max(max_diff, std::fabs(out->row(0)[v] - ref_.prompt_logits.back()[v]));
  }
  EXPECT_LT(max_diff, 0.25);
  EXPECT_GT(max_diff, 0.0);  // really stored as bf16
}

// One batched step over sequences of different lengths (prefill and decode mixed) equals
// running each sequence alone.
TEST_F(Stories260K, BatchedStepEqualsSeparateRuns) {
  std::mt19937 rng(7);
  const int V = weights_->config.vocab_size;
  std::vector<std::vector<int32_t>> histories = {{1, 5, 9, 300}, {1}, {1, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56}};
  std::vector<std::vector<int32_t>> next = {{77}, {3, 4, 5}, {200}};
  auto run = [&](std::vector<size_t> which) {
    CpuBackend backend(2);
    KvCache cache(CacheFor(weights_->config, 400));
    ModelRunner runner(weights_.get(), &backend, &cache);
    std::vector<SequenceInput> first, second;
    for (size_t i : which) {
      EXPECT_TRUE(cache.Create(i).ok());
      first.push_back({static_cast<int64_t>(i), histories[i], 0, false, false});
      second.push_back({static_cast<int64_t>(i), next[i],
                        static_cast<int32_t>(histories[i].size()), true, true});
    }
    EXPECT_TRUE(runner.Forward(first).ok());
    auto out = runner.Forward(second);
    EXPECT_TRUE(out.ok());
    std::vector<std::vector<float>> logits;
    for (size_t b = 0; b < which.size(); ++b) {
      for (int r = 0; r < out->num_rows[b]; ++r) {
        logits.emplace_back(out->row(out->first_row[b] + r), out->row(out->first_row[b] + r) + V);
      }
    }
    return logits;
  };
  auto together = run({0, 1, 2});
  std::vector<std::vector<float>> alone;
  for (size_t i = 0; i < 3; ++i) {
    auto l = run({i});
    alone.insert(alone.end(), l.begin(), l.end());
  }
  ASSERT_EQ(together.size(), alone.size());
  for (size_t r = 0; r < together.size(); ++r)
    for (int v = 0; v < V; ++v) ASSERT_NEAR(together[r][v], alone[r][v], 1e-4);
}

TEST_F(Stories260K, RejectsBadInputWithoutChangingState) {
  CpuBackend backend(1);
  KvCache cache(CacheFor(weights_->config, 60));
  ModelRunner runner(weights_.get(), &backend, &cache);
  ASSERT_TRUE(cache.Create(1).ok());
  int free_before = cache.pool().num_free();
  EXPECT_EQ(runner.Forward({{1, {1, 512}, 0, true, false}}).status().code(),
            absl::StatusCode::kInvalidArgument);  // id outside vocab
  EXPECT_EQ(runner.Forward({{1, {1, -3}, 0, true, false}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(runner.Forward({{1, {}, 0, true, false}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(runner.Forward({{2, {1}, 0, true, false}}).status().code(),
            absl::StatusCode::kInvalidArgument);  // unknown sequence
  EXPECT_EQ(runner.Forward({{1, {1}, 512, true, false}}).status().code(),
            absl::StatusCode::kInvalidArgument);  // past the context
  std::vector<int32_t> many(300, 5);
  EXPECT_EQ(runner.Forward({{1, many, 0, true, false}}).status().code(),
            absl::StatusCode::kResourceExhausted);  // 40 tables x 19 blocks > 60
  EXPECT_EQ(cache.pool().num_free(), free_before);

  Generator gen(&runner, nullptr);
  GenerationRequest too_long;
  too_long.prompt.assign(512, 5);
  auto r = gen.Generate({too_long});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("context"), std::string::npos) << r.status();
}

TEST(DummyWeights, DeterministicForASeedWhateverTheThreads) {
  auto c = BuiltinConfig("stories15M");
  ASSERT_TRUE(c.ok());
  c->num_layers = 2;
  auto a = MakeDummyWeights(*c, 42, 1);
  auto b = MakeDummyWeights(*c, 42, 3);
  auto d = MakeDummyWeights(*c, 43, 2);
  ASSERT_TRUE(a.ok() && b.ok() && d.ok());
  const int64_t n = int64_t{c->vocab_size} * c->hidden_size;
  EXPECT_TRUE(std::equal((*a)->embed, (*a)->embed + n, (*b)->embed));
  EXPECT_FALSE(std::equal((*a)->embed, (*a)->embed + n, (*d)->embed));
  EXPECT_TRUE(std::equal((*a)->layers[1].w_down, (*a)->layers[1].w_down + 1000, (*b)->layers[1].w_down));
  // Values are spread, not constant.
  double mean = 0, sq = 0;
  for (int64_t i = 0; i < n; ++i) mean += (*a)->embed[i], sq += (*a)->embed[i] * (*a)->embed[i];
  mean /= n;
  EXPECT_NEAR(mean, 0.0, 0.01);
  EXPECT_NEAR(sq / n, 1.0 / 3.0, 0.01);  // uniform(-1, 1)
}

TEST(DummyWeights, BuiltinsHaveTheRealShapes) {
  auto t = BuiltinConfig("tinyllama-1.1b");
  ASSERT_TRUE(t.ok());
  EXPECT_NEAR(t->NumParameters() / 1e9, 1.100, 0.01);
  auto l3 = BuiltinConfig("llama-3-8b");
  ASSERT_TRUE(l3.ok());
  EXPECT_NEAR(l3->NumParameters() / 1e9, 8.03, 0.01);
  auto l32 = BuiltinConfig("llama-3.2-1b");
  ASSERT_TRUE(l32.ok());
  EXPECT_NEAR(l32->NumParameters() / 1e9, 1.236, 0.01);
  EXPECT_FALSE(BuiltinConfig("gpt-5").ok());
}

TEST(RopeScaling, Llama3FrequenciesFollowThePiecewiseRule) {
  auto c = BuiltinConfig("llama-3.2-1b");
  ASSERT_TRUE(c.ok());
  std::vector<double> inv = RopeInvFrequencies(*c);
  ASSERT_EQ(inv.size(), 32u);
  const double two_pi = 2 * M_PI;
  for (int i = 0; i < 32; ++i) {
    double base = std::pow(500000.0, -2.0 * i / 64);
    double wavelen = two_pi / base;
    if (wavelen < 8192.0 / 4) {
      EXPECT_DOUBLE_EQ(inv[i], base) << i;        // high frequencies untouched
    } else if (wavelen > 8192.0) {
      EXPECT_DOUBLE_EQ(inv[i], base / 32) << i;   // low frequencies scaled by the factor
    } else {
      EXPECT_LT(inv[i], base);                    // smooth blend in between
      EXPECT_GT(inv[i], base / 32);
    }
  }
  EXPECT_DOUBLE_EQ(inv[0], 1.0);
}

}  // namespace
}  // namespace kvasir

// CudaModelRunner against the CPU fp32 ModelRunner on stories260K: teacher forcing over 4
// sequences of 500 tokens (2,000 positions) fed as mixed prefill chunks and decode steps in
// batches of all four, top-1 agreement >= 99%; and bad inputs rejected before any state
// changes; pure-decode steps replayed from CUDA graphs against the eager path. Skips without a
// CUDA device (the validation and bucket tests do not need one).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "attention/local_attention.h"
#include "decoder/engine.h"
#include "gtest/gtest.h"
#include "kvcache/kv_cache.h"
#include "model/model_runner.h"
#include "model/testing_util.h"
#include "runtime/cpu/cpu_backend.h"
#include "model/cuda/cuda_model_runner.h"
#include "runtime/cuda/decode_graphs.h"

namespace kvasir {
namespace {

bool HaveGpu() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return n > 0;
}

constexpr int kSeqs = 4;
constexpr int kSeqLen = 500;

// TinyStories-style text, long enough for four overlapping 500-token windows.
const char* const kText =
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the "
    "sunshine. One day, she saw a big red ball in the park. She ran to the ball and kicked it "
    "very hard. The ball flew over the fence and into the garden of an old man. Lily was sad "
    "because she could not get her ball back. Then the old man came out and smiled at her. He "
    "gave the ball back to Lily and said, \"Be careful next time.\" Lily said thank you and "
    "they became good friends. Every day after that, Lily went to visit the old man and they "
    "played together in his garden. They planted flowers and watched the birds sing in the "
    "trees. One morning, a little dog came to the garden. The dog was hungry and cold. Lily "
    "gave the dog some bread and a warm blanket. The dog wagged its tail and licked her hand. "
    "The old man said the dog could stay with them. Lily named the dog Spot because it had a "
    "big brown spot on its back. Spot liked to run and jump and chase the ball. One day, it "
    "started to rain. Lily, Spot and the old man went inside the house. They drank hot milk "
    "and ate cookies. The old man told Lily a story about a brave knight and a kind dragon. "
    "Lily listened and laughed. When the rain stopped, they saw a big rainbow in the sky. Lily "
    "was very happy. She hugged the old man and Spot and said it was the best day ever. "
    "Once there was a boy named Tim. Tim had a toy car that he loved very much. He played with "
    "it every day. One day, his friend Sam wanted to play with the car too. Tim did not want "
    "to share. Sam was sad and went home. Tim played alone, but it was not fun. He felt bad. "
    "The next day, Tim went to Sam's house with his car. He said sorry and they played "
    "together. They made a road out of blocks and the car went fast down the hill. They "
    "laughed and laughed. Tim learned that sharing makes playing more fun. Later, his mom "
    "made a big cake for the two friends. It was a chocolate cake with a cherry on top. They "
    "ate the cake and then went to the pond to see the ducks. The ducks were swimming and "
    "quacking. Tim threw some bread into the water and the ducks came close. Sam laughed when "
    "a duck took the bread right from his hand. At night, Tim went to bed and dreamed about "
    "cars, cakes and ducks. He smiled in his sleep because he had a good friend.";

std::vector<std::vector<int32_t>> TestSequences(const Tokenizer& tok) {
  auto ids = tok.Encode(kText, /*add_bos=*/false);
  EXPECT_TRUE(ids.ok()) << ids.status();
  std::vector<int32_t> stream = ids.ok() ? *ids : std::vector<int32_t>{};
  while (!stream.empty() && static_cast<int>(stream.size()) < kSeqLen + 3 * 50) {
    stream.insert(stream.end(), stream.begin(), stream.end());
  }
  std::vector<std::vector<int32_t>> seqs;
  if (stream.empty()) return seqs;
  const int64_t step = (static_cast<int64_t>(stream.size()) - kSeqLen) / (kSeqs - 1);
  for (int s = 0; s < kSeqs; ++s) {
    std::vector<int32_t> t(stream.begin() + s * step, stream.begin() + s * step + kSeqLen);
    t[0] = tok.bos_id() >= 0 ? tok.bos_id() : t[0];
    seqs.push_back(std::move(t));
  }
  return seqs;
}

// Chunk sizes cycled per sequence (offset by the sequence index): prefill chunks of several
// sizes between runs of single-token decode steps.
const int kChunks[] = {61, 1, 1, 1, 120, 17, 1, 1, 33, 200, 1, 64};

KvCacheConfig CpuCacheConfig(const ModelConfig& c) { return KvCacheConfigFor(c, 16, 4096); }

TEST(CudaModelRunner, MatchesCpuUnderTeacherForcing) {
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA device";
  testing::TestModel m = testing::LoadStories260K();
  ASSERT_NE(m.weights, nullptr);
  ASSERT_NE(m.tokenizer, nullptr);
  const ModelConfig& c = m.weights->config;
  const std::vector<std::vector<int32_t>> seqs = TestSequences(*m.tokenizer);
  ASSERT_EQ(static_cast<int>(seqs.size()), kSeqs);

  CpuBackend backend(2);
  KvCache cpu_cache(CpuCacheConfig(c));
  ModelRunner cpu(m.weights.get(), &backend, &cpu_cache);
  CudaModelRunnerOptions opt;
  opt.block_size = 16;
  opt.num_blocks = 4096;
  auto gpu_or = CudaModelRunner::Create(m.weights.get(), opt);
  ASSERT_TRUE(gpu_or.ok()) << gpu_or.status();
  CudaModelRunner& gpu = **gpu_or;
  // Same weights with every attention range cut into 48-token splits and merged.
  opt.attention_split = 48;
  auto split_or = CudaModelRunner::Create(m.weights.get(), opt);
  ASSERT_TRUE(split_or.ok()) << split_or.status();
  CudaModelRunner& gpu_split = **split_or;
  for (int s = 0; s < kSeqs; ++s) {
    ASSERT_TRUE(cpu_cache.Create(100 + s).ok());
    ASSERT_TRUE(gpu.cache().Create(100 + s).ok());
    ASSERT_TRUE(gpu_split.cache().Create(100 + s).ok());
  }

  std::vector<int> done(kSeqs, 0), chunk_index(kSeqs, 0);
  int64_t positions = 0, agree = 0, steps = 0, decode_rows = 0;
  int64_t split_agree = 0;
  double max_abs_diff = 0.0, split_max_abs_diff = 0.0, split_vs_unsplit = 0.0;
  while (true) {
    std::vector<SequenceInput> batch;
    for (int s = 0; s < kSeqs; ++s) {
      if (done[s] >= kSeqLen) continue;
      const int want = kChunks[(chunk_index[s]++ + s) % std::size(kChunks)];
      const int n = std::min(want, kSeqLen - done[s]);
      SequenceInput in;
      in.seq_id = 100 + s;
      in.tokens.assign(seqs[s].begin() + done[s], seqs[s].begin() + done[s] + n);
      in.start_pos = done[s];
      in.want_logits = true;
      in.all_logits = true;
      if (n == 1) ++decode_rows;
      done[s] += n;
      batch.push_back(std::move(in));
    }
    if (batch.empty()) break;
    ++steps;
    auto ref = cpu.Forward(batch);
    ASSERT_TRUE(ref.ok()) << ref.status();
    auto got = gpu.Forward(batch);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(got->logits.size(), ref->logits.size());
    ASSERT_EQ(got->first_row, ref->first_row);
    auto split = gpu_split.Forward(batch);
    ASSERT_TRUE(split.ok()) << split.status();
    ASSERT_EQ(split->logits.size(), got->logits.size());
    for (size_t i = 0; i < got->logits.size(); ++i) {
      split_vs_unsplit = std::max(
          split_vs_unsplit, static_cast<double>(std::fabs(split->logits[i] - got->logits[i])));
      split_max_abs_diff = std::max(
          split_max_abs_diff, static_cast<double>(std::fabs(split->logits[i] - ref->logits[i])));
    }
    const int64_t rows = static_cast<int64_t>(ref->logits.size()) / c.vocab_size;
    for (int64_t r = 0; r < rows; ++r) {
      const float* a = ref->row(static_cast<int32_t>(r));
      const float* b = got->row(static_cast<int32_t>(r));
      const int64_t ia = std::max_element(a, a + c.vocab_size) - a;
      const int64_t ib = std::max_element(b, b + c.vocab_size) - b;
      const float* sp = split->row(static_cast<int32_t>(r));
      agree += ia == ib;
      split_agree += ia == std::max_element(sp, sp + c.vocab_size) - sp;
      ++positions;
      for (int v = 0; v < c.vocab_size; ++v) {
        ASSERT_TRUE(std::isfinite(b[v])) << "row " << r << " logit " << v;
        max_abs_diff = std::max(max_abs_diff, static_cast<double>(std::fabs(a[v] - b[v])));
      }
    }
  }
  const double pct = 100.0 * static_cast<double>(agree) / static_cast<double>(positions);
  std::printf(
      "stories260K CUDA (bf16 weights, bf16 KV) vs CPU fp32: %lld positions in %lld "
      "steps (%lld decode rows), top-1 agreement %.2f%% (%lld/%lld), logits max abs "
      "diff %.4g\n",
      static_cast<long long>(positions), static_cast<long long>(steps),
      static_cast<long long>(decode_rows), pct, static_cast<long long>(agree),
      static_cast<long long>(positions), max_abs_diff);
  const double split_pct =
      100.0 * static_cast<double>(split_agree) / static_cast<double>(positions);
  std::printf(
      "split-KV CUDA (48-token splits + merge) vs CPU fp32: top-1 agreement %.2f%%, "
      "logits max abs diff %.4g; vs unsplit CUDA: max abs diff %.4g\n",
      split_pct, split_max_abs_diff, split_vs_unsplit);
  RecordProperty("top1_agreement_pct", std::to_string(pct));
  RecordProperty("logits_max_abs_diff", std::to_string(max_abs_diff));
  EXPECT_EQ(positions, int64_t{kSeqs} * kSeqLen);
  EXPECT_GE(pct, 99.0);
  // The kernel test checks split + merge to 1e-6; through the bf16 casts of this model a
  // reordered fp32 sum can still move logits by a few tenths, so the split runner is held to
  // the same bar against the CPU instead of a tight bound against the unsplit one.
  EXPECT_GE(split_pct, 99.0);
  for (int s = 0; s < kSeqs; ++s) EXPECT_EQ(gpu.cache().Length(100 + s), kSeqLen);
}

std::vector<SequenceInput> BadBatches(int32_t vocab) {
  std::vector<SequenceInput> bad;
  bad.push_back({1, {5, vocab}, 0, true, false});  // token id out of the vocabulary
  bad.push_back({1, {5, -1}, 0, true, false});     // negative token id
  bad.push_back({42, {5}, 0, true, false});        // unknown sequence
  bad.push_back({1, {}, 0, true, false});          // no tokens
  bad.push_back({1, {5}, 3, true, false});         // start_pos past the cached length
  return bad;
}

// No device needed: the checks Forward() makes first, on a bookkeeping-only cache.
TEST(CudaModelRunner, ValidateBatchRejectsBadInput) {
  auto cfg = BuiltinConfig("stories260K");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  KvCacheConfig kc = CpuCacheConfig(*cfg);
  kc.host_storage = false;
  kc.num_blocks = 64;
  KvCache cache(kc);
  ASSERT_TRUE(cache.Create(1).ok());
  for (const SequenceInput& in : BadBatches(cfg->vocab_size)) {
    EXPECT_EQ(CudaModelRunner::ValidateBatch(*cfg, cache, {in}).code(),
              absl::StatusCode::kInvalidArgument);
  }
  // A good sequence next to a bad one: the whole batch is rejected.
  SequenceInput good{1, {5, 6}, 0, true, false};
  EXPECT_TRUE(CudaModelRunner::ValidateBatch(*cfg, cache, {good}).ok());
  EXPECT_EQ(CudaModelRunner::ValidateBatch(*cfg, cache, {good, good}).code(),
            absl::StatusCode::kInvalidArgument);
  // 5 layers × 4 kv heads need 20 blocks for any first token; 64 blocks hold 3 sequences.
  SequenceInput huge{1, std::vector<int32_t>(16 * 4, 5), 0, true, false};
  EXPECT_EQ(CudaModelRunner::ValidateBatch(*cfg, cache, {huge}).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(cache.pool().num_free(), 64);
  EXPECT_EQ(cache.Length(1), 0);
}

// On the device: bad input leaves the cache as it was, and the runner still works afterwards.
TEST(CudaModelRunner, BadInputLeavesStateUntouched) {
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA device";
  testing::TestModel m = testing::LoadStories260K();
  ASSERT_NE(m.weights, nullptr);
  CudaModelRunnerOptions opt;
  opt.num_blocks = 256;
  auto gpu_or = CudaModelRunner::Create(m.weights.get(), opt);
  ASSERT_TRUE(gpu_or.ok()) << gpu_or.status();
  CudaModelRunner& gpu = **gpu_or;
  ASSERT_TRUE(gpu.cache().Create(1).ok());
  ASSERT_TRUE(gpu.cache().Create(2).ok());
  ASSERT_TRUE(gpu.Forward({{1, {1, 5, 6}, 0, true, false}}).ok());
  const int32_t free_before = gpu.cache().pool().num_free();
  for (SequenceInput bad : BadBatches(m.weights->config.vocab_size)) {
    if (bad.seq_id == 1) bad.seq_id = 2;  // fresh sequence 2; 1 goes along as a good entry
    auto r = gpu.Forward({{1, {7}, 3, true, false}, bad});
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
    EXPECT_EQ(gpu.cache().pool().num_free(), free_before);
    EXPECT_EQ(gpu.cache().Length(1), 3);
    EXPECT_EQ(gpu.cache().Length(2), 0);
  }
  auto ok = gpu.Forward({{1, {7}, 3, true, false}});
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(gpu.cache().Length(1), 4);
}

int32_t Argmax(const float* row, int32_t n) {
  return static_cast<int32_t>(std::max_element(row, row + n) - row);
}

// Device sampling: a greedy entry's token is the argmax of its own logits row (the batch has a
// host-sampled entry too, so the rows come back) with the raw log-softmax as its logprob; an
// entry without sampling gets none.
TEST(CudaModelRunner, DeviceGreedyMatchesHostArgmax) {
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA device";
  testing::TestModel m = testing::LoadStories260K();
  ASSERT_NE(m.weights, nullptr);
  const int32_t V = m.weights->config.vocab_size;
  const std::vector<std::vector<int32_t>> seqs = TestSequences(*m.tokenizer);
  ASSERT_EQ(static_cast<int>(seqs.size()), kSeqs);
  CudaModelRunnerOptions opt;
  opt.num_blocks = 1024;
  auto gpu_or = CudaModelRunner::Create(m.weights.get(), opt);
  ASSERT_TRUE(gpu_or.ok()) << gpu_or.status();
  CudaModelRunner& gpu = **gpu_or;
  ASSERT_TRUE(gpu.samples_on_device());
  for (int s = 0; s < 3; ++s) ASSERT_TRUE(gpu.kv()->Grow(10 + s, 0).ok());
  std::vector<std::vector<int32_t>> fed(3);
  for (int s = 0; s < 3; ++s) fed[s].assign(seqs[s].begin(), seqs[s].begin() + 40 + 7 * s);
  int checked = 0;
  for (int step = 0; step < 60; ++step) {
    std::vector<SequenceInput> batch;
    for (int s = 0; s < 3; ++s) {
      SequenceInput in;
      in.seq_id = 10 + s;
      in.start_pos = gpu.cache().Length(10 + s);
      in.tokens.assign(fed[s].begin() + in.start_pos, fed[s].end());
      if (s < 2) in.sampling = RunnerSampling{};  // greedy
      ASSERT_TRUE(gpu.kv()->Grow(10 + s, static_cast<int32_t>(in.tokens.size())).ok());
      batch.push_back(std::move(in));
    }
    auto out = gpu.Forward(batch);
    ASSERT_TRUE(out.ok()) << out.status();
    ASSERT_EQ(out->sampled.size(), 3u);
    EXPECT_EQ(out->sampled[2], -1);
    ASSERT_FALSE(out->logits.empty());  // entry 2 samples on the host
    for (int s = 0; s < 3; ++s) {
      const float* row = out->row(out->first_row[s]);
      const int32_t want = Argmax(row, V);
      if (s < 2) {
        EXPECT_EQ(out->sampled[s], want) << "step " << step << " seq " << s;
        double mx = row[want], sum = 0.0;
        for (int32_t v = 0; v < V; ++v) sum += std::exp(static_cast<double>(row[v]) - mx);
        EXPECT_NEAR(out->sampled_logprob[s], -std::log(sum), 1e-4);
        ++checked;
      }
      fed[s].push_back(s < 2 ? out->sampled[s] : want);
    }
  }
  EXPECT_EQ(checked, 120);
  // Without a host-sampled entry no logits travel: the entries have no rows.
  SequenceInput in{10, {fed[0].back()}, gpu.cache().Length(10), true, false};
  in.sampling = RunnerSampling{};
  in.sampling->temperature = 0.7f;
  in.sampling->top_p = 0.9f;
  in.sampling->seed = 5;
  ASSERT_TRUE(gpu.kv()->Grow(10, 1).ok());
  auto out = gpu.Forward({in});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE(out->logits.empty());
  EXPECT_EQ(out->first_row[0], -1);
  EXPECT_GE(out->sampled[0], 0);
  EXPECT_LT(out->sampled[0], V);
}

std::vector<int32_t> RunEngine(StepRunner* runner, const std::vector<int32_t>& prompt,
                               const SamplingParams& params) {
  EngineConfig ec;
  ec.max_num_batched_tokens = 1024;
  Engine engine(runner, ec);
  engine.Start();
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::vector<int32_t> tokens;
  EngineRequest r;
  r.id = 1;
  r.prompt = prompt;
  r.params = params;
  r.on_event = [&](EngineEvent ev) {
    std::lock_guard<std::mutex> lock(mu);
    tokens.insert(tokens.end(), ev.tokens.begin(), ev.tokens.end());
    if (ev.finished) {
      EXPECT_EQ(ev.finish_reason, "length") << ev.error;
      done = true;
      cv.notify_all();
    }
  };
  EXPECT_TRUE(engine.Submit(std::move(r)).ok());
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return done; });
  return tokens;
}

// The engine on the CUDA runner: greedy tokens (sampled on the device) equal a step-by-step
// greedy loop over the runner's host logits, and seeded sampling repeats itself.
// The engine on `runner`: greedy equals the host argmax of the runner's own logits fed back step
// by step (80 tokens); seeded sampling repeats and another seed differs; no block is left held.
void ExpectEngineIsStepwiseArgmax(CudaModelRunner* runner, const std::vector<int32_t>& prompt) {
  const int32_t V = runner->config().vocab_size;
  std::vector<int32_t> want;
  {
    ASSERT_TRUE(runner->kv()->Grow(500, static_cast<int32_t>(prompt.size())).ok());
    SequenceInput in{500, prompt, 0, true, false};
    for (int i = 0; i < 80; ++i) {
      auto out = runner->Forward({in});
      ASSERT_TRUE(out.ok()) << out.status();
      want.push_back(Argmax(out->row(out->first_row[0]), V));
      in.start_pos += static_cast<int32_t>(in.tokens.size());
      in.tokens = {want.back()};
      ASSERT_TRUE(runner->kv()->Grow(500, 1).ok());
    }
    runner->kv()->Release(500);
  }
  SamplingParams greedy;
  greedy.temperature = 0.0f;
  greedy.max_tokens = 80;
  greedy.ignore_eos = true;
  EXPECT_EQ(RunEngine(runner, prompt, greedy), want);
  SamplingParams sampled = greedy;
  sampled.temperature = 0.9f;
  sampled.top_k = 40;
  sampled.top_p = 0.95f;
  sampled.seed = 1234;
  const std::vector<int32_t> a = RunEngine(runner, prompt, sampled);
  const std::vector<int32_t> b = RunEngine(runner, prompt, sampled);
  EXPECT_EQ(a.size(), 80u);
  EXPECT_EQ(a, b);
  sampled.seed = 4321;
  EXPECT_NE(RunEngine(runner, prompt, sampled), a);
  EXPECT_EQ(runner->kv()->Usage().blocks_used, 0);
}

TEST(CudaModelRunner, EngineOnCudaRunner) {
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA device";
  testing::TestModel m = testing::LoadStories260K();
  ASSERT_NE(m.weights, nullptr);
  const std::vector<std::vector<int32_t>> seqs = TestSequences(*m.tokenizer);
  ASSERT_FALSE(seqs.empty());
  const std::vector<int32_t> prompt(seqs[1].begin(), seqs[1].begin() + 30);
  CudaModelRunnerOptions opt;
  opt.num_blocks = 2048;
  auto gpu_or = CudaModelRunner::Create(m.weights.get(), opt);
  ASSERT_TRUE(gpu_or.ok()) << gpu_or.status();
  CudaModelRunner& gpu = **gpu_or;

  ExpectEngineIsStepwiseArgmax(&gpu, prompt);
}

// Top-1 agreement of a runner under teacher forcing (the test sequences in the mixed chunk
// schedule of kChunks) with the CPU fp32 runner and the device-pool CUDA runner, fed the same
// batches; sequences are created through got->kv()->Grow.
struct Agreement {
  int64_t positions = 0, agree_cpu = 0, agree_dev = 0;
  double max_abs_diff = 0.0;  // logits against the CPU fp32 runner
  double pct_cpu() const { return 100.0 * agree_cpu / std::max<int64_t>(positions, 1); }
  double pct_dev() const { return 100.0 * agree_dev / std::max<int64_t>(positions, 1); }
};

Agreement TeacherForce(CudaModelRunner* got_runner, ModelRunner* cpu, KvCache* cpu_cache,
                       CudaModelRunner* dev, const std::vector<std::vector<int32_t>>& seqs) {
  Agreement a;
  const int32_t V = got_runner->config().vocab_size;
  for (int s = 0; s < kSeqs; ++s) {
    EXPECT_TRUE(cpu_cache->Create(100 + s).ok());
    EXPECT_TRUE(dev->cache().Create(100 + s).ok());
    EXPECT_TRUE(got_runner->kv()->Grow(100 + s, 0).ok());
  }
  std::vector<int> done(kSeqs, 0), chunk_index(kSeqs, 0);
  while (true) {
    std::vector<SequenceInput> batch;
    for (int s = 0; s < kSeqs; ++s) {
      if (done[s] >= kSeqLen) continue;
      const int n = std::min(kChunks[(chunk_index[s]++ + s) % std::size(kChunks)],
                             kSeqLen - done[s]);
      SequenceInput in;
      in.seq_id = 100 + s;
      in.tokens.assign(seqs[s].begin() + done[s], seqs[s].begin() + done[s] + n);
      in.start_pos = done[s];
      in.all_logits = true;
      done[s] += n;
      absl::Status grown = got_runner->kv()->Grow(in.seq_id, n);
      EXPECT_TRUE(grown.ok()) << grown;
      if (!grown.ok()) return a;
      batch.push_back(std::move(in));
    }
    if (batch.empty()) break;
    auto ref = cpu->Forward(batch);
    auto d = dev->Forward(batch);
    auto got = got_runner->Forward(batch);
    EXPECT_TRUE(ref.ok() && d.ok() && got.ok())
        << ref.status() << " " << d.status() << " " << got.status();
    if (!ref.ok() || !d.ok() || !got.ok()) return a;
    EXPECT_EQ(got->logits.size(), ref->logits.size());
    EXPECT_EQ(got->first_row, ref->first_row);
    const int64_t rows = static_cast<int64_t>(ref->logits.size()) / V;
    for (int64_t r = 0; r < rows; ++r) {
      const float* g = got->row(static_cast<int32_t>(r));
      const int32_t ig = Argmax(g, V);
      a.agree_cpu += ig == Argmax(ref->row(static_cast<int32_t>(r)), V);
      a.agree_dev += ig == Argmax(d->row(static_cast<int32_t>(r)), V);
      ++a.positions;
      for (int v = 0; v < V; ++v) {
        EXPECT_TRUE(std::isfinite(g[v]));
        a.max_abs_diff =
            std::max(a.max_abs_diff, static_cast<double>(std::fabs(g[v] - ref->row(r)[v])));
      }
    }
  }
  for (int s = 0; s < kSeqs; ++s) {
    cpu_cache->Free(100 + s);
    dev->kv()->Release(100 + s);
  }
  return a;
}

// The dense layers on the device, attention over a host KvCache through the AttentionExecutor
// seam (the path a CUDA decoder takes to attention workers): under teacher forcing it agrees
// with the CPU fp32 runner as the device-pool runner does, its engine output is the
// step-by-step host argmax of its own logits, seeded sampling repeats, and it frees every block.
TEST(CudaModelRunner, ExternalHostAttention) {
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA device";
  testing::TestModel m = testing::LoadStories260K();
  ASSERT_NE(m.weights, nullptr);
  const ModelConfig& c = m.weights->config;
  const int32_t V = c.vocab_size;
  const std::vector<std::vector<int32_t>> seqs = TestSequences(*m.tokenizer);
  ASSERT_EQ(static_cast<int>(seqs.size()), kSeqs);

  CpuBackend backend(2);
  KvCache cpu_cache(CpuCacheConfig(c)), host_cache(CpuCacheConfig(c));
  ModelRunner cpu(m.weights.get(), &backend, &cpu_cache);
  LocalAttention host_attention(&host_cache, &backend,
                                {c.num_heads, c.num_kv_heads, c.head_dim, c.num_layers});
  CudaModelRunnerOptions opt;
  opt.num_blocks = 4096;
  auto ext_or = CudaModelRunner::Create(m.weights.get(), opt, &host_attention);
  ASSERT_TRUE(ext_or.ok()) << ext_or.status();
  CudaModelRunner& ext = **ext_or;
  EXPECT_EQ(ext.kv(), &host_attention);
  auto dev_or = CudaModelRunner::Create(m.weights.get(), opt);
  ASSERT_TRUE(dev_or.ok()) << dev_or.status();
  CudaModelRunner& dev = **dev_or;
  const Agreement a = TeacherForce(&ext, &cpu, &cpu_cache, &dev, seqs);
  std::printf(
      "stories260K CUDA dense + host fp32 attention: %lld positions, top-1 agreement %.2f%% with "
      "CPU fp32 (logits max abs diff %.4g), %.2f%% with the device-pool CUDA runner\n",
      static_cast<long long>(a.positions), a.pct_cpu(), a.max_abs_diff, a.pct_dev());
  EXPECT_EQ(a.positions, int64_t{kSeqs} * kSeqLen);
  EXPECT_GE(a.pct_cpu(), 99.0);
  EXPECT_GE(a.pct_dev(), 99.0);
  for (int s = 0; s < kSeqs; ++s) {
    EXPECT_EQ(host_cache.Length(100 + s), kSeqLen);
    ext.kv()->Release(100 + s);
  }

  // The engine on it.
  const std::vector<int32_t> prompt(seqs[1].begin(), seqs[1].begin() + 30);
  ExpectEngineIsStepwiseArgmax(&ext, prompt);
  EXPECT_EQ(ext.stats().graph_steps, 0);

  // Bad input is refused before the executor or the device is touched.
  EXPECT_EQ(ext.Forward({{42, {5}, 0, true, false}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ext.Forward({{42, {V}, 0, true, false}}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// The hybrid executor: each sequence's first tokens in the device pool, the rest in a host
// KvCache (bf16 rows, as the device pool's), merged by lse on the device. With a 40-token cap
// per sequence (segments forced onto the host; prefill chunks straddle the split) and with a
// device pool too small for the four sequences (they spill where the pool runs out), teacher
// forcing agrees with the CPU fp32 runner and the device-pool runner, greedy decoding picks the
// device pool's tokens wherever they are not near-ties, and every block of both pools comes back.
TEST(CudaModelRunner, HybridNearAndFarAttention) {
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA device";
  testing::TestModel m = testing::LoadStories260K();
  ASSERT_NE(m.weights, nullptr);
  const ModelConfig& c = m.weights->config;
  const std::vector<std::vector<int32_t>> seqs = TestSequences(*m.tokenizer);
  ASSERT_EQ(static_cast<int>(seqs.size()), kSeqs);
  CpuBackend backend(2);
  KvCache cpu_cache(CpuCacheConfig(c));
  KvCache host_cache(KvCacheConfigFor(c, 16, 4096, /*host_storage=*/true, KvDType::kBF16));
  ModelRunner cpu(m.weights.get(), &backend, &cpu_cache);
  LocalAttention far(&host_cache, &backend,
                     {c.num_heads, c.num_kv_heads, c.head_dim, c.num_layers});
  CudaModelRunnerOptions opt;
  opt.num_blocks = 4096;
  auto dev_or = CudaModelRunner::Create(m.weights.get(), opt);
  ASSERT_TRUE(dev_or.ok()) << dev_or.status();
  CudaModelRunner& dev = **dev_or;
  const int64_t tables = int64_t{c.num_layers} * c.num_kv_heads;

  for (const bool capped : {true, false}) {
    SCOPED_TRACE(capped ? "40-token cap per sequence" : "a device pool of 10 blocks per table");
    HybridPlacementOptions hp;
    hp.sink_tokens = 16;
    CudaModelRunnerOptions o = opt;
    if (capped) {
      hp.max_near_tokens = 40;
    } else {
      o.num_blocks = static_cast<int32_t>(tables * 10);  // 160 tokens for all four sequences
      hp.reserve_blocks = tables;                        // one block per table kept for sinks
    }
    auto hyb_or = CudaModelRunner::CreateHybrid(m.weights.get(), o, &far, hp);
    ASSERT_TRUE(hyb_or.ok()) << hyb_or.status();
    CudaModelRunner& hyb = **hyb_or;
    ASSERT_NE(hyb.hybrid(), nullptr);
    const Agreement a = TeacherForce(&hyb, &cpu, &cpu_cache, &dev, seqs);
    int64_t near_tokens = 0;
    for (int s = 0; s < kSeqs; ++s) {
      const int32_t near = hyb.cache().Length(100 + s);
      near_tokens += near;
      EXPECT_GE(near, 16);
      if (capped) {
        EXPECT_EQ(near, 40);
      }
      EXPECT_EQ(hyb.hybrid()->NearEnd(100 + s), near);
      EXPECT_EQ(host_cache.Length(100 + s), kSeqLen - near);
    }
    std::printf(
        "stories260K hybrid (%s): %lld positions, %lld of %d tokens on the GPU, %lld far rows; "
        "top-1 agreement %.2f%% with CPU fp32 (logits max abs diff %.4g), %.2f%% with the "
        "device-pool CUDA runner\n",
        capped ? "cap 40" : "pool 160 tokens", static_cast<long long>(a.positions),
        static_cast<long long>(near_tokens), kSeqs * kSeqLen,
        static_cast<long long>(hyb.stats().hybrid_far_rows), a.pct_cpu(), a.max_abs_diff,
        a.pct_dev());
    EXPECT_EQ(a.positions, int64_t{kSeqs} * kSeqLen);
    EXPECT_GE(a.pct_cpu(), 99.0);
    EXPECT_GE(a.pct_dev(), 99.5);
    EXPECT_GT(hyb.stats().hybrid_far_rows, 0);
    for (int s = 0; s < kSeqs; ++s) hyb.kv()->Release(100 + s);
    EXPECT_EQ(hyb.kv()->Usage().blocks_used, 0);
    EXPECT_EQ(host_cache.pool().num_free(), host_cache.pool().num_blocks());

    // Greedy decoding along the device-pool runner's own path (both fed its argmax), spilling
    // to the host mid-decode: the hybrid's argmax is the device pool's at every step that is not
    // a near-tie there (top-2 margin < 0.1), and its logits stay close.
    {
      const std::vector<int32_t> prompt(seqs[2].begin(), seqs[2].begin() + 30);
      const int32_t V = c.vocab_size;
      ASSERT_TRUE(dev.cache().Create(600).ok());
      ASSERT_TRUE(hyb.kv()->Grow(600, 30).ok());
      SequenceInput in{600, prompt, 0, true, false};
      int mismatches = 0, near_ties = 0;
      double max_diff = 0.0;
      for (int i = 0; i < 150; ++i) {
        auto d = dev.Forward({in});
        auto h = hyb.Forward({in});
        ASSERT_TRUE(d.ok() && h.ok()) << d.status() << " " << h.status();
        const float* dr = d->row(d->first_row[0]);
        const float* hr = h->row(h->first_row[0]);
        const int32_t want = Argmax(dr, V);
        float second = -INFINITY;
        for (int v = 0; v < V; ++v) {
          if (v != want) second = std::max(second, dr[v]);
          max_diff = std::max(max_diff, static_cast<double>(std::fabs(dr[v] - hr[v])));
        }
        if (Argmax(hr, V) != want) {
          ++(dr[want] - second < 0.1f ? near_ties : mismatches);
        }
        in.start_pos += static_cast<int32_t>(in.tokens.size());
        in.tokens = {want};
        ASSERT_TRUE(hyb.kv()->Grow(600, 1).ok());
      }
      std::printf("  greedy path, 150 steps: %d argmax differences at near-ties, %d elsewhere, "
                  "logits max abs diff %.4g against the device pool; GPU part %d tokens\n",
                  near_ties, mismatches, max_diff, hyb.cache().Length(600));
      EXPECT_EQ(mismatches, 0);
      EXPECT_LT(max_diff, 0.25);
      EXPECT_LT(hyb.cache().Length(600), 180);  // it spilled
      dev.kv()->Release(600);
      hyb.kv()->Release(600);
    }
    ExpectEngineIsStepwiseArgmax(&hyb,
                                 std::vector<int32_t>(seqs[2].begin(), seqs[2].begin() + 30));
    EXPECT_EQ(host_cache.pool().num_free(), host_cache.pool().num_blocks());
  }
}

// The device mirror of the page tables: at most max_seqs sequences hold KV; a released slot is
// reused, and a sequence freed and created again (same id) starts from fresh tables.
TEST(CudaModelRunner, SlotsAreReusedAcrossFreeAndCreate) {
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA device";
  testing::TestModel m = testing::LoadStories260K();
  ASSERT_NE(m.weights, nullptr);
  const std::vector<std::vector<int32_t>> seqs = TestSequences(*m.tokenizer);
  ASSERT_EQ(static_cast<int>(seqs.size()), kSeqs);
  CudaModelRunnerOptions opt;
  opt.num_blocks = 2048;
  opt.max_seqs = 2;
  auto gpu_or = CudaModelRunner::Create(m.weights.get(), opt);
  ASSERT_TRUE(gpu_or.ok()) << gpu_or.status();
  CudaModelRunner& gpu = **gpu_or;
  opt.max_seqs = 8;
  auto ref_or = CudaModelRunner::Create(m.weights.get(), opt);
  ASSERT_TRUE(ref_or.ok()) << ref_or.status();
  CudaModelRunner& ref = **ref_or;

  auto run = [](CudaModelRunner& r, int64_t id, const std::vector<int32_t>& t) {
    EXPECT_TRUE(r.kv()->Grow(id, static_cast<int32_t>(t.size())).ok());
    return r.Forward({{id, t, r.cache().Length(id), true, true}});
  };
  const std::vector<int32_t> p0(seqs[0].begin(), seqs[0].begin() + 70);
  const std::vector<int32_t> p2(seqs[2].begin(), seqs[2].begin() + 90);
  ASSERT_TRUE(run(gpu, 1, p0).ok());
  ASSERT_TRUE(run(gpu, 2, p0).ok());
  auto third = run(gpu, 3, p0);
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted) << third.status();
  gpu.kv()->Release(3);
  gpu.kv()->Release(1);
  // Same id, new life, different tokens; and a cache().Free() noticed through the generation.
  auto again = run(gpu, 1, p2);
  ASSERT_TRUE(again.ok()) << again.status();
  gpu.cache().Free(2);
  auto fresh = run(gpu, 2, p2);
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  auto want = run(ref, 7, p2);
  ASSERT_TRUE(want.ok()) << want.status();
  ASSERT_EQ(again->logits.size(), want->logits.size());
  double diff = 0.0, diff2 = 0.0;
  for (size_t i = 0; i < want->logits.size(); ++i) {
    diff = std::max(diff, static_cast<double>(std::fabs(again->logits[i] - want->logits[i])));
    diff2 = std::max(diff2, static_cast<double>(std::fabs(fresh->logits[i] - want->logits[i])));
  }
  EXPECT_LE(diff, 1e-5);
  EXPECT_LE(diff2, 1e-5);
}

// No device needed: bucket sizes and the KV length a graph's split plan is made for.
TEST(DecodeGraphs, BucketsAndPlanLengths) {
  using cuda_internal::DecodeGraphBuckets;
  EXPECT_EQ(DecodeGraphBuckets(1), std::vector<int32_t>({1}));
  EXPECT_EQ(DecodeGraphBuckets(5), std::vector<int32_t>({1, 2, 4, 5}));
  EXPECT_EQ(DecodeGraphBuckets(32), std::vector<int32_t>({1, 2, 4, 8, 16, 32}));
  EXPECT_EQ(DecodeGraphBuckets(100),
            std::vector<int32_t>({1, 2, 4, 8, 16, 32, 48, 64, 80, 96, 100}));
  const std::vector<int32_t> all = DecodeGraphBuckets(1 << 20);
  EXPECT_EQ(all, std::vector<int32_t>(
                     {1, 2, 4, 8, 16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256}));
  EXPECT_EQ(all.back(), cuda_internal::kMaxGraphBatch);
  using cuda_internal::GraphPlanKvLen;
  EXPECT_EQ(GraphPlanKvLen(1, 8192), 128);
  EXPECT_EQ(GraphPlanKvLen(128, 8192), 128);
  EXPECT_EQ(GraphPlanKvLen(129, 8192), 256);
  EXPECT_EQ(GraphPlanKvLen(5000, 8192), 8192);
  EXPECT_EQ(GraphPlanKvLen(5000, 6000), 6000);
  EXPECT_EQ(GraphPlanKvLen(100, 64), 100);  // never below the step's own length
}

// Runs the same batches through two runners and compares what comes back.
struct PairedRunners {
  CudaModelRunner* graphs;
  CudaModelRunner* eager;
  int32_t vocab;
  double max_logit_diff = 0.0;
  int64_t rows = 0, agree = 0;

  // Grows both caches, runs `batch` on both; fills next[b] with each entry's next token (the
  // device sample, else the argmax of its last host row) from each runner.
  void Step(const std::vector<SequenceInput>& batch, std::vector<int32_t>* next_graphs,
            std::vector<int32_t>* next_eager) {
    for (CudaModelRunner* r : {graphs, eager}) {
      for (const SequenceInput& in : batch) {
        ASSERT_TRUE(r->kv()->Grow(in.seq_id, static_cast<int32_t>(in.tokens.size())).ok());
      }
    }
    auto a = graphs->Forward(batch);
    ASSERT_TRUE(a.ok()) << a.status();
    auto b = eager->Forward(batch);
    ASSERT_TRUE(b.ok()) << b.status();
    ASSERT_EQ(a->first_row, b->first_row);
    ASSERT_EQ(a->num_rows, b->num_rows);
    ASSERT_EQ(a->logits.size(), b->logits.size());
    ASSERT_EQ(a->sampled.size(), b->sampled.size());
    for (size_t i = 0; i < a->logits.size(); ++i) {
      ASSERT_TRUE(std::isfinite(a->logits[i])) << i;
      max_logit_diff =
          std::max(max_logit_diff, static_cast<double>(std::fabs(a->logits[i] - b->logits[i])));
    }
    auto next = [&](const ForwardResult& r, std::vector<int32_t>* out) {
      out->assign(batch.size(), -1);
      for (size_t e = 0; e < batch.size(); ++e) {
        if (!r.sampled.empty() && r.sampled[e] >= 0) {
          (*out)[e] = r.sampled[e];
        } else if (r.first_row[e] >= 0) {
          (*out)[e] = Argmax(r.row(r.first_row[e] + r.num_rows[e] - 1), vocab);
        }
      }
    };
    next(*a, next_graphs);
    next(*b, next_eager);
    for (size_t e = 0; e < batch.size(); ++e) {
      ++rows;
      agree += (*next_graphs)[e] == (*next_eager)[e];
    }
  }
};

// Greedy decoding with graphs on and off: the same tokens and (host) logits within 1e-5, over
// batches of 1, 3, 5, 17, 4 and 2 sequences (padded to buckets 1, 4, 8, 32, 4, 2). Sequences
// join through mixed prefill + decode steps (eager) and leave between phases, so slots are
// reused under the graphs; 8-token blocks make every sequence cross block boundaries during
// replays. Entries mix device sampling, host logits and all_logits. Every range stays under
// 128 tokens, where the graphs' split-KV plan equals the eager one (no split).
TEST(CudaModelRunner, DecodeGraphsMatchEager) {
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA device";
  testing::TestModel m = testing::LoadStories260K();
  ASSERT_NE(m.weights, nullptr);
  const std::vector<std::vector<int32_t>> text = TestSequences(*m.tokenizer);
  ASSERT_EQ(static_cast<int>(text.size()), kSeqs);
  CudaModelRunnerOptions opt;
  opt.num_blocks = 8192;
  opt.block_size = 8;
  opt.max_seqs = 32;
  auto graphs_or = CudaModelRunner::Create(m.weights.get(), opt);
  ASSERT_TRUE(graphs_or.ok()) << graphs_or.status();
  opt.cuda_graphs = false;
  auto eager_or = CudaModelRunner::Create(m.weights.get(), opt);
  ASSERT_TRUE(eager_or.ok()) << eager_or.status();
  PairedRunners run{graphs_or->get(), eager_or->get(), m.weights->config.vocab_size};

  struct Live {
    int64_t id;
    std::vector<int32_t> fed;  // prompt, then the generated tokens
    int32_t cached = 0;
  };
  std::vector<Live> live;  // oldest first
  int64_t next_id = 1;
  std::set<int32_t> buckets_used;
  const std::vector<int32_t> all_buckets = cuda_internal::DecodeGraphBuckets(opt.max_seqs);
  int decode_steps = 0;
  for (int target : {1, 3, 5, 17, 4, 2}) {
    while (static_cast<int>(live.size()) > target) {  // the oldest leave
      run.graphs->kv()->Release(live.front().id);
      run.eager->kv()->Release(live.front().id);
      live.erase(live.begin());
    }
    while (static_cast<int>(live.size()) < target) {  // new ones join with a prompt
      const int64_t id = next_id++;
      ASSERT_TRUE(run.graphs->kv()->Grow(id, 0).ok());
      ASSERT_TRUE(run.eager->kv()->Grow(id, 0).ok());
      const std::vector<int32_t>& t = text[id % kSeqs];
      const int len = 3 + static_cast<int>((id * 7) % 17);
      const int off = static_cast<int>((id * 37) % 200);
      live.push_back({id, std::vector<int32_t>(t.begin() + off, t.begin() + off + len), 0});
    }
    for (int step = 0; step < 20; ++step) {
      std::vector<SequenceInput> batch;
      bool pure_decode = true;
      for (const Live& l : live) {
        SequenceInput in;
        in.seq_id = l.id;
        in.start_pos = l.cached;
        in.tokens.assign(l.fed.begin() + l.cached, l.fed.end());
        if (l.id % 3 == 1) in.sampling = RunnerSampling{};  // greedy on the device
        in.all_logits = l.id % 3 == 2;
        pure_decode &= in.tokens.size() == 1;
        batch.push_back(std::move(in));
      }
      std::vector<int32_t> got, want;
      run.Step(batch, &got, &want);
      if (::testing::Test::HasFatalFailure()) return;
      ASSERT_EQ(got, want) << "batch of " << live.size() << ", step " << step;
      if (pure_decode) {
        ++decode_steps;
        buckets_used.insert(*std::lower_bound(all_buckets.begin(), all_buckets.end(),
                                              static_cast<int32_t>(live.size())));
      }
      for (size_t e = 0; e < live.size(); ++e) {
        live[e].cached = static_cast<int32_t>(live[e].fed.size());
        live[e].fed.push_back(got[e]);
        ASSERT_LT(live[e].fed.size(), 128u);
      }
    }
  }
  const CudaRunnerStats& gs = run.graphs->stats();
  const CudaRunnerStats& es = run.eager->stats();
  std::printf(
      "decode graphs vs eager: %lld steps (%lld from graphs, %lld graphs captured in %.1f ms, "
      "%lld capture failures), token agreement %lld/%lld, logits max abs diff %.3g\n",
      static_cast<long long>(gs.eager_steps + gs.graph_steps),
      static_cast<long long>(gs.graph_steps), static_cast<long long>(gs.graphs_captured),
      gs.capture_ms, static_cast<long long>(gs.capture_failures), static_cast<long long>(run.agree),
      static_cast<long long>(run.rows), run.max_logit_diff);
  if (gs.timed_replays > 0) {
    std::printf("  graph replays: %.3f ms on the GPU, %.3f ms per Forward() (%lld timed)\n",
                gs.replay_gpu_ms / gs.timed_replays, gs.replay_forward_ms / gs.timed_replays,
                static_cast<long long>(gs.timed_replays));
  }
  EXPECT_EQ(run.agree, run.rows);
  EXPECT_LE(run.max_logit_diff, 1e-5);
  EXPECT_EQ(gs.graph_steps, decode_steps);
  EXPECT_EQ(gs.capture_failures, 0);
  EXPECT_EQ(gs.graphs_captured, static_cast<int64_t>(buckets_used.size()));
  EXPECT_EQ(es.graph_steps, 0);
  EXPECT_EQ(es.graphs_captured, 0);
  for (const Live& l : live) {
    EXPECT_EQ(run.graphs->cache().Length(l.id), l.cached);
    EXPECT_EQ(run.eager->cache().Length(l.id), l.cached);
  }
  EXPECT_EQ(run.graphs->kv()->Usage().blocks_used, run.eager->kv()->Usage().blocks_used);
}

// Past 128 tokens the graphs' attention splits by the length class (here 256, then 512) while
// the eager plan follows the exact length, so the fp32 sums are ordered differently: teacher
// forced, the two stay within the split-KV bounds of MatchesCpuUnderTeacherForcing. Three
// sequences: bucket 4, so a padding row rides along the split + merge.
TEST(CudaModelRunner, DecodeGraphsWithSplitKv) {
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA device";
  testing::TestModel m = testing::LoadStories260K();
  ASSERT_NE(m.weights, nullptr);
  const std::vector<std::vector<int32_t>> text = TestSequences(*m.tokenizer);
  ASSERT_EQ(static_cast<int>(text.size()), kSeqs);
  CudaModelRunnerOptions opt;
  opt.num_blocks = 4096;
  auto graphs_or = CudaModelRunner::Create(m.weights.get(), opt);
  ASSERT_TRUE(graphs_or.ok()) << graphs_or.status();
  opt.cuda_graphs = false;
  auto eager_or = CudaModelRunner::Create(m.weights.get(), opt);
  ASSERT_TRUE(eager_or.ok()) << eager_or.status();
  PairedRunners run{graphs_or->get(), eager_or->get(), m.weights->config.vocab_size};
  constexpr int kPrompt = 230, kEnd = 300, kN = 3;
  std::vector<SequenceInput> batch;
  for (int s = 0; s < kN; ++s) {
    ASSERT_TRUE(run.graphs->kv()->Grow(s, 0).ok());
    ASSERT_TRUE(run.eager->kv()->Grow(s, 0).ok());
    batch.push_back(
        {s, std::vector<int32_t>(text[s].begin(), text[s].begin() + kPrompt), 0, true, false});
  }
  std::vector<int32_t> got, want;
  run.Step(batch, &got, &want);
  for (int pos = kPrompt; pos < kEnd; ++pos) {
    for (int s = 0; s < kN; ++s) batch[s] = {s, {text[s][pos]}, pos, true, false};
    run.Step(batch, &got, &want);
    if (::testing::Test::HasFatalFailure()) return;
  }
  const CudaRunnerStats& gs = run.graphs->stats();
  const double pct = 100.0 * static_cast<double>(run.agree) / static_cast<double>(run.rows);
  std::printf(
      "split-KV decode graphs vs eager (teacher forced, %d sequences, positions %d..%d): "
      "%lld graph steps, %lld graphs, top-1 agreement %.2f%%, logits max abs diff %.3g\n",
      kN, kPrompt, kEnd, static_cast<long long>(gs.graph_steps),
      static_cast<long long>(gs.graphs_captured), pct, run.max_logit_diff);
  EXPECT_EQ(gs.graph_steps, kEnd - kPrompt);
  EXPECT_EQ(gs.capture_failures, 0);
  EXPECT_EQ(gs.graphs_captured, 2);  // length classes 256 and 512
  EXPECT_GE(pct, 99.0);
  EXPECT_LE(run.max_logit_diff, 1.0);
}

}  // namespace
}  // namespace kvasir

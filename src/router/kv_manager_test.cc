// The router's KV manager: placement through the manager (the embedded mode's wiring) gives the
// same tokens and logits as one local cache; the cross-decoder rules (older growth first,
// younger requests on any decoder give way) in unit tests; and a simulation of several decoders
// — each the real batch scheduler over a DistributedAttention — sharing tiny pools under random
// arrivals, where every request must finish (the deadlock of issue 11 otherwise).
#include "router/kv_manager.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>

#include "decoder/executor_budget.h"
#include "decoder/generator.h"
#include "gtest/gtest.h"
#include "model/testing_util.h"
#include "runtime/cpu/cpu_backend.h"
#include "scheduler/batch_scheduler.h"

namespace kvasir {
namespace {

// The embedded mode's wiring: a KvManager over in-process shards, and their data-plane links.
class LocalPools {
 public:
  LocalPools(std::vector<std::string> names, std::vector<AttentionShard*> shards,
             sched::Clock* clock = nullptr)
      : manager_(BlocksPerTokenBlock(shards[0]), shards[0]->Info().block_size,
                 clock ? clock : &system_clock_),
        links_(names, shards) {
    for (size_t i = 0; i < shards.size(); ++i) {
      pools_.push_back(std::make_unique<InProcessPool>(shards[i]));
      manager_.AddPool(names[i], shards[i]->Info().num_blocks, pools_.back().get());
    }
  }
  KvManager* manager() { return &manager_; }
  LinkResolver links() { return links_.Resolver(); }

 private:
  static int64_t BlocksPerTokenBlock(AttentionShard* s) {
    const ShardInfo i = s->Info();
    return static_cast<int64_t>(i.shape.num_layers) * i.shape.num_kv_heads;
  }
  sched::SystemClock system_clock_;
  KvManager manager_;
  InProcessLinks links_;
  std::vector<std::unique_ptr<InProcessPool>> pools_;
};

int64_t Key(int64_t decoder, int64_t seq) { return (decoder << kSeqKeyBits) | seq; }

// ---- The rules, one pool of 8 blocks (block size 4, one block per token block).
class KvManagerRulesTest : public ::testing::Test {
 protected:
  KvManagerRulesTest()
      : backend_(1),
        shard_(AttentionShape{2, 1, 4, 1}, 4, 8, &backend_),
        pools_({"p"}, {&shard_}, &clock_) {}
  KvManager& m() { return *pools_.manager(); }
  sched::FakeClock clock_;
  CpuBackend backend_;
  AttentionShard shard_;
  LocalPools pools_;
};

TEST_F(KvManagerRulesTest, OlderGrowthMakesYoungerSequencesOnOtherDecodersGiveWay) {
  // Decoder 1 runs the oldest request (priority 10), decoder 2 two younger ones.
  ASSERT_TRUE(m().Allocate(Key(1, 1), 8, 10).ok());   // 2 blocks
  ASSERT_TRUE(m().Allocate(Key(2, 1), 12, 20).ok());  // 3 blocks
  ASSERT_TRUE(m().Allocate(Key(2, 2), 12, 30).ok());  // 3 blocks: the pool is full
  EXPECT_EQ(m().Usage().blocks_used, 8);
  // The oldest cannot grow: the youngest on the other decoder is ordered to give way.
  auto grow = m().Extend(Key(1, 1), 8, 10);
  EXPECT_TRUE(absl::IsResourceExhausted(grow.status())) << grow.status();
  EXPECT_TRUE(m().TakePreemptions(1).empty());
  EXPECT_EQ(m().TakePreemptions(2), std::vector<int64_t>{Key(2, 2)});
  EXPECT_TRUE(m().TakePreemptions(2).empty());  // once
  EXPECT_EQ(m().stats().pending_growths, 1);
  // Decoder 2 preempts it; its blocks are held for the older growth, not re-admitted.
  m().Free(Key(2, 2));
  EXPECT_TRUE(absl::IsResourceExhausted(m().Allocate(Key(2, 2), 12, 30).status()));
  // Not even for the middle request's growth, which is younger than the pending one (it may
  // take what the pending growth does not need: 1 of the 3 free blocks).
  EXPECT_TRUE(absl::IsResourceExhausted(m().Extend(Key(2, 1), 8, 20).status()));
  auto grown = m().Extend(Key(1, 1), 8, 10);
  ASSERT_TRUE(grown.ok()) << grown.status();
  EXPECT_EQ(grown->back().capacity, 16);
  EXPECT_EQ(m().stats().pending_growths, 1);  // the younger growth refused above
  // With no older growth pending, the younger one gets what is left.
  EXPECT_TRUE(m().Extend(Key(2, 1), 4, 20).ok());
  EXPECT_EQ(m().stats().pending_growths, 0);
  EXPECT_EQ(m().Usage().blocks_used, 8);
  for (int64_t k : {Key(1, 1), Key(2, 1), Key(2, 2)}) m().Free(k);
  EXPECT_EQ(m().Usage().blocks_used, 0);
  EXPECT_EQ(shard_.Info().free_blocks, 8);
  EXPECT_EQ(m().num_sequences(), 0);
}

TEST_F(KvManagerRulesTest, OrdersAreDeliveredAgainUntilTheVictimIsFreed) {
  ASSERT_TRUE(m().Allocate(Key(1, 1), 16, 1).ok());  // 4 blocks
  ASSERT_TRUE(m().Allocate(Key(3, 7), 16, 2).ok());  // 4 blocks
  EXPECT_FALSE(m().Extend(Key(1, 1), 4, 1).ok());
  EXPECT_EQ(m().TakePreemptions(3), std::vector<int64_t>{Key(3, 7)});
  clock_.Advance(absl::Milliseconds(500));
  EXPECT_TRUE(m().TakePreemptions(3).empty());
  clock_.Advance(absl::Milliseconds(600));  // lost, or ignored: sent again
  EXPECT_EQ(m().TakePreemptions(3), std::vector<int64_t>{Key(3, 7)});
  m().Free(Key(3, 7));
  clock_.Advance(absl::Seconds(2));
  EXPECT_TRUE(m().TakePreemptions(3).empty());
  EXPECT_EQ(m().stats().preemptions_ordered_total, 1);
}

TEST_F(KvManagerRulesTest, OlderRequestsAreNeverVictimsAndPendingEntriesExpire) {
  ASSERT_TRUE(m().Allocate(Key(1, 1), 16, 1).ok());  // the oldest holds half the pool
  ASSERT_TRUE(m().Allocate(Key(2, 1), 16, 5).ok());
  // The younger one cannot grow: nobody younger to take from, nobody older is asked.
  EXPECT_FALSE(m().Extend(Key(2, 1), 4, 5).ok());
  EXPECT_TRUE(m().TakePreemptions(1).empty());
  EXPECT_TRUE(m().TakePreemptions(2).empty());
  // A new request waits behind the pending growth even once blocks are free...
  m().Free(Key(1, 1));
  EXPECT_FALSE(m().Allocate(Key(1, 2), 16, 9).ok());
  // ...until the growth happens or its sequence stops asking.
  clock_.Advance(absl::Seconds(3));
  EXPECT_TRUE(m().Allocate(Key(1, 2), 16, 9).ok());
  EXPECT_EQ(m().stats().pending_growths, 0);
}

// A pool that goes down takes its segments: the sequences are ordered to be recomputed, their
// growth says Aborted, the other pools' blocks come back when they are freed; the pool rejoins.
TEST(KvManagerFaultsTest, DownPoolLosesItsSequencesAndRejoins) {
  sched::FakeClock clock;
  CpuBackend backend(1);
  const AttentionShape shape{2, 1, 4, 1};
  AttentionShard a(shape, 4, 8, &backend), b(shape, 4, 8, &backend);
  LocalPools pools({"a", "b"}, {&a, &b}, &clock);
  KvManager& m = *pools.manager();
  auto spans = m.Allocate(Key(1, 1), 48, 1);  // 12 blocks: 8 on one pool, 4 on the other
  ASSERT_TRUE(spans.ok()) << spans.status();
  ASSERT_EQ(spans->size(), 2u);
  ASSERT_TRUE(m.Allocate(Key(2, 1), 8, 2).ok());  // 2 blocks, on the pool with room
  const std::string first = (*spans)[0].worker, second = (*spans)[1].worker;
  EXPECT_EQ(m.MaxTokens(), 64);
  m.PoolDown(second);
  EXPECT_FALSE(m.pool_alive(second));
  EXPECT_EQ(m.MaxTokens(), 32);
  EXPECT_EQ(m.MaxTokensAllUp(), 64);
  // Both sequences had blocks on it: both are to be recomputed.
  EXPECT_EQ(m.TakePreemptions(1), std::vector<int64_t>{Key(1, 1)});
  EXPECT_EQ(m.TakePreemptions(2), std::vector<int64_t>{Key(2, 1)});
  EXPECT_TRUE(absl::IsAborted(m.Extend(Key(1, 1), 4, 1).status()));
  // Too big for what is left, not for the cluster: unavailable, not invalid.
  EXPECT_TRUE(absl::IsUnavailable(m.Allocate(Key(3, 1), 40, 3).status()));
  EXPECT_EQ(m.stats().sequences_lost_total, 2);
  m.Free(Key(1, 1));
  m.Free(Key(2, 1));
  EXPECT_EQ(m.Usage().blocks_used, 0);
  EXPECT_EQ(m.num_sequences(), 0);
  EXPECT_EQ((first == "a" ? a : b).Info().free_blocks, 8);
  // It comes back still holding its old segments (it was frozen): they are freed first.
  std::vector<int64_t> stale = m.TakeDroppedKeys(second);
  EXPECT_EQ(stale.size(), 2u);
  AttentionShard& s = second == "a" ? a : b;
  for (int64_t k : stale) s.FreeSegment(k);
  m.PoolUp(second, s.Info().num_blocks, s.Info().free_blocks);
  EXPECT_TRUE(m.pool_alive(second));
  EXPECT_EQ(m.MaxTokens(), 64);
  EXPECT_TRUE(m.Allocate(Key(3, 1), 40, 3).ok());
  m.Free(Key(3, 1));
  EXPECT_EQ(a.Info().free_blocks + b.Info().free_blocks, 16);
}

// A decoder that stops calling (killed) loses its lease: its blocks return to the pools.
TEST(KvManagerFaultsTest, ExpiredDecoderLeasesFreeTheirBlocks) {
  sched::FakeClock clock;
  CpuBackend backend(1);
  AttentionShard a(AttentionShape{2, 1, 4, 1}, 4, 16, &backend);
  LocalPools pools({"a"}, {&a}, &clock);
  KvManager& m = *pools.manager();
  ASSERT_TRUE(m.Allocate(Key(1, 1), 8, 1).ok());
  ASSERT_TRUE(m.Allocate(Key(1, 2), 8, 2).ok());
  ASSERT_TRUE(m.Allocate(Key(2, 1), 8, 3).ok());
  clock.Advance(absl::Seconds(6));
  (void)m.TakePreemptions(2);  // decoder 2's poll renews its lease; decoder 1 is silent
  clock.Advance(absl::Seconds(6));
  EXPECT_EQ(m.ExpiredDecoders(absl::Seconds(10)), std::vector<int64_t>{1});
  EXPECT_EQ(m.FreeDecoder(1), 2);
  EXPECT_TRUE(m.ExpiredDecoders(absl::Seconds(10)).empty());  // forgotten until it calls
  EXPECT_EQ(m.num_sequences(), 1);
  EXPECT_EQ(a.Info().free_blocks, 14);
  EXPECT_EQ(m.stats().sequences_reclaimed_total, 2);
}

// ---- Several decoders over shared tiny pools: every request finishes.
struct SimDecoder {
  SimDecoder(int64_t id, KvManager* m, LinkResolver links, AttentionShape shape,
             sched::Clock* clock, const sched::SchedulerConfig& sc)
      : attention(shape, m, std::move(links), id), budget(&attention), scheduler(sc, &budget, clock) {
    attention.SetPriorityFn([this](int64_t seq) { return priority.at(seq); });
  }
  DistributedAttention attention;
  ExecutorBudget budget;
  sched::BatchScheduler scheduler;
  std::unordered_map<int64_t, int64_t> priority;  // seq -> arrival order at the "router"
};

struct SimResult {
  int finished = 0;
  int64_t ticks = 0;
  KvManagerStats stats;
  int64_t local_preemptions = 0;
};

SimResult Simulate(uint64_t seed, int num_decoders, int num_requests, int pool_blocks) {
  std::mt19937_64 rng(seed);
  sched::FakeClock clock;
  CpuBackend backend(1);
  const AttentionShape shape{2, 1, 4, 1};  // one block per 4 tokens
  AttentionShard a(shape, 4, pool_blocks, &backend), b(shape, 4, pool_blocks, &backend);
  LocalPools pools({"a", "b"}, {&a, &b}, &clock);
  sched::SchedulerConfig sc;
  sc.max_num_seqs = 8;
  sc.max_num_batched_tokens = 32;
  std::vector<std::unique_ptr<SimDecoder>> decoders;
  for (int d = 0; d < num_decoders; ++d) {
    decoders.push_back(std::make_unique<SimDecoder>(d + 1, pools.manager(), pools.links(), shape,
                                                    &clock, sc));
  }
  // Arrivals: tick, decoder, prompt, new tokens.
  struct Arrival {
    int64_t tick;
    int decoder;
    int32_t prompt, max_new;
  };
  std::vector<Arrival> arrivals;
  for (int i = 0; i < num_requests; ++i) {
    arrivals.push_back({static_cast<int64_t>(rng() % 60), static_cast<int>(rng() % num_decoders),
                        static_cast<int32_t>(1 + rng() % 24),
                        static_cast<int32_t>(8 + rng() % 32)});
  }
  std::sort(arrivals.begin(), arrivals.end(),
            [](const Arrival& x, const Arrival& y) { return x.tick < y.tick; });
  SimResult r;
  size_t next = 0;
  int64_t order = 0;
  std::vector<int> turn(num_decoders);
  for (int d = 0; d < num_decoders; ++d) turn[d] = d;
  for (r.ticks = 0; r.ticks < 100000 && r.finished < num_requests; ++r.ticks) {
    while (next < arrivals.size() && arrivals[next].tick <= r.ticks) {
      const Arrival& x = arrivals[next++];
      SimDecoder& d = *decoders[x.decoder];
      const int64_t id = ++order;
      d.priority[id] = id;
      EXPECT_TRUE(d.scheduler.Add(id, x.prompt, x.max_new).ok());
    }
    std::shuffle(turn.begin(), turn.end(), rng);  // the decoders interleave at random
    for (int di : turn) {
      SimDecoder& d = *decoders[di];
      for (int64_t id : d.attention.TakePreemptions()) (void)d.scheduler.PreemptRequest(id);
      sched::ScheduledStep step = d.scheduler.Schedule();
      EXPECT_TRUE(d.budget.TakeFailures().empty());
      if (step.empty()) continue;
      std::vector<sched::StepOutcome> outcomes;
      for (const sched::ScheduledSeq& s : step.seqs) {
        outcomes.push_back({s.request_id, s.wants_logits, false});
      }
      auto done = d.scheduler.OnStepDone(outcomes);
      EXPECT_TRUE(done.ok());
      if (done.ok()) r.finished += static_cast<int>(done->size());
    }
    clock.Advance(absl::Milliseconds(1));
  }
  r.stats = pools.manager()->stats();
  for (auto& d : decoders) r.local_preemptions += d->scheduler.num_preemptions_total();
  EXPECT_EQ(pools.manager()->Usage().blocks_used, 0);
  EXPECT_EQ(a.Info().free_blocks + b.Info().free_blocks, 2 * pool_blocks);
  return r;
}

TEST(KvManagerSimulationTest, EveryRequestFinishesAcrossDecodersSharingTinyPools) {
  int64_t orders = 0;
  for (uint64_t seed = 1; seed <= 12; ++seed) {
    const int decoders = 2 + static_cast<int>(seed % 3);
    SimResult r = Simulate(seed, decoders, 40, /*pool_blocks=*/16);
    EXPECT_EQ(r.finished, 40) << "seed " << seed << ": stalled after " << r.ticks << " ticks";
    orders += r.stats.preemptions_ordered_total;
  }
  // The pools are small enough that the cross-decoder path is what keeps things moving.
  EXPECT_GT(orders, 0);
}

// ---- stories260K end to end: distributed over two small shards == one local cache.
class DistributedModelTest : public testing::Stories260KTest {
 protected:
  void SetUp() override {
    Stories260KTest::SetUp();
    if (HasFatalFailure()) return;
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
  std::vector<GenerationResult> RunLocal(const std::vector<GenerationRequest>& reqs,
                                         KvDType dtype = KvDType::kF32) {
    const ModelConfig& c = weights_->config;
    KvCache cache({c.num_layers, c.num_kv_heads, c.head_dim, 16, 20000, true, dtype});
    ModelRunner runner(weights_.get(), backend_.get(), &cache);
    Generator gen(&runner, tok_.get(), GeneratorOptions{13, 256});
    auto r = gen.Generate(reqs);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : std::vector<GenerationResult>{};
  }
  std::unique_ptr<CpuBackend> backend_;
  AttentionShape shape_;
};

TEST_F(DistributedModelTest, SequenceSpanningTwoWorkersGivesIdenticalTokens) {
  // 5 layers x 4 kv heads = 20 blocks per 16 tokens: 220 blocks hold 176 tokens per worker, so
  // a 300-token sequence needs both.
  AttentionShard a(shape_, 16, 220, backend_.get()), b(shape_, 16, 240, backend_.get());
  LocalPools dir({"a", "b"}, {&a, &b});
  DistributedAttention dist(shape_, dir.manager(), dir.links());
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
  EXPECT_EQ(dir.manager()->Usage().blocks_used, 0);
}

TEST_F(DistributedModelTest, ManySequencesOverTwoWorkersEqualLocal) {
  AttentionShard a(shape_, 4, 3000, backend_.get()), b(shape_, 4, 3000, backend_.get());
  LocalPools dir({"a", "b"}, {&a, &b});
  DistributedAttention dist(shape_, dir.manager(), dir.links(), /*key_prefix=*/3);
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
  LocalPools dir({"a", "b", "d"}, {&a, &b, &d});
  DistributedAttention dist(shape_, dir.manager(), dir.links());
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

// bf16 KV on the workers (what CUDA decoders pair with): the same tokens as one local cache
// stored in bf16, and the rounding stays small against fp32 KV.
TEST_F(DistributedModelTest, Bf16ShardsEqualABf16LocalCacheAndStayCloseToFp32) {
  AttentionShard a(shape_, 16, 220, backend_.get(), KvDType::kBF16),
      b(shape_, 16, 240, backend_.get(), KvDType::kBF16);
  EXPECT_EQ(a.Info().dtype, KvDType::kBF16);
  LocalPools dir({"a", "b"}, {&a, &b});
  DistributedAttention dist(shape_, dir.manager(), dir.links());
  ModelRunner runner(weights_.get(), backend_.get(), &dist);
  std::vector<GenerationRequest> reqs = {Req("Once upon a time", 290), Req("Lily and Ben", 120)};
  Generator gen(&runner, tok_.get(), GeneratorOptions{13, 256});
  auto got = gen.Generate(reqs);
  ASSERT_TRUE(got.ok()) << got.status();
  std::vector<GenerationResult> want = RunLocal(reqs, KvDType::kBF16);
  ASSERT_EQ(want.size(), 2u);
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ((*got)[i].tokens, want[i].tokens) << i;
  EXPECT_EQ(a.Info().free_blocks + b.Info().free_blocks, 460);

  // Teacher-forced over the fp32 run's own tokens: bf16 KV picks the same argmax almost
  // everywhere and moves the logits by little.
  std::vector<GenerationResult> f32 = RunLocal({reqs[0]});
  const ModelConfig& c = weights_->config;
  std::vector<int32_t> ids = reqs[0].prompt;
  ids.insert(ids.end(), f32[0].tokens.begin(), f32[0].tokens.end() - 1);
  const int32_t n = static_cast<int32_t>(ids.size());
  KvCache c32({c.num_layers, c.num_kv_heads, c.head_dim, 16, 2000}),
      c16({c.num_layers, c.num_kv_heads, c.head_dim, 16, 2000, true, KvDType::kBF16});
  ModelRunner r32(weights_.get(), backend_.get(), &c32), r16(weights_.get(), backend_.get(), &c16);
  ASSERT_TRUE(c32.Create(1).ok() && c16.Create(1).ok());
  auto l32 = r32.Forward({{1, ids, 0, true, true}});
  auto l16 = r16.Forward({{1, ids, 0, true, true}});
  ASSERT_TRUE(l32.ok() && l16.ok());
  int agree = 0;
  double max_diff = 0;
  for (int32_t t = 0; t < n; ++t) {
    const float* x = l32->row(t);
    const float* y = l16->row(t);
    agree += std::max_element(x, x + c.vocab_size) - x == std::max_element(y, y + c.vocab_size) - y;
    for (int32_t v = 0; v < c.vocab_size; ++v) {
      max_diff = std::max<double>(max_diff, std::fabs(x[v] - y[v]));
    }
  }
  EXPECT_GE(agree, n * 98 / 100) << agree << " of " << n;
  EXPECT_GT(max_diff, 0.0);  // the KV really was rounded
  EXPECT_LT(max_diff, 0.5);
  std::printf("bf16 vs fp32 KV, %d teacher-forced positions: top-1 %d agree, max |dlogit| %.4f\n",
              n, agree, max_diff);
}

}  // namespace
}  // namespace kvasir

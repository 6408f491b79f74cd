#include "scheduler/batch_scheduler.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <optional>
#include <ostream>
#include <random>
#include <set>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "scheduler/fake_kv_budget.h"

namespace kvasir::sched {
namespace {

using ::testing::ElementsAre;

// Plays the engine: feeds what the scheduler asks, samples a token wherever logits are wanted,
// and checks every step against its own model of each request (position, logits, preemption).
class Harness {
 public:
  Harness(const SchedulerConfig& config, int64_t num_blocks, int32_t block_size)
      : kv(num_blocks, block_size), sched(config, &kv, &clock) {}

  absl::Status Add(int64_t id, int32_t prompt, int32_t max_new) {
    absl::Status st = sched.Add(id, prompt, max_new, clock.Now());
    if (st.ok()) reqs[id] = Req{prompt, max_new};
    return st;
  }
  // Finish `id` (as by a stop token) once it has produced `n` tokens.
  void StopAfter(int64_t id, int32_t n) { reqs[id].stop_after = n; }

  ScheduledStep Step() {
    ScheduledStep step = sched.Schedule();
    EXPECT_LE(step.num_batched_tokens, sched.config().max_num_batched_tokens);
    EXPECT_LE(static_cast<int32_t>(step.seqs.size()), sched.config().max_num_seqs);
    for (int64_t id : step.preempted) {
      EXPECT_FALSE(kv.Holds(id)) << id;
      reqs[id].computed = 0;
      ++reqs[id].preemptions;
    }
    std::vector<StepOutcome> outcomes;
    std::set<int64_t> seen;
    int32_t total = 0;
    for (const ScheduledSeq& s : step.seqs) {
      EXPECT_TRUE(seen.insert(s.request_id).second) << "scheduled twice: " << s.request_id;
      Req& r = reqs.at(s.request_id);
      const int32_t known = r.prompt + r.generated;
      EXPECT_GE(s.num_tokens, 1);
      EXPECT_EQ(s.start_pos, r.computed) << s.request_id;
      EXPECT_LE(s.start_pos + s.num_tokens, known) << s.request_id;
      EXPECT_EQ(s.wants_logits, s.start_pos + s.num_tokens == known) << s.request_id;
      EXPECT_EQ(s.is_prefill, !(r.generated > 0 && s.start_pos == known - 1 && s.num_tokens == 1));
      if (s.is_prefill && !r.admitted_once) admission_order.push_back(s.request_id);
      r.admitted_once = true;
      r.computed += s.num_tokens;
      r.fed += s.num_tokens;
      total += s.num_tokens;
      StepOutcome o;
      o.request_id = s.request_id;
      if (s.wants_logits) {
        o.produced_token = true;
        ++r.generated;
        o.finished = r.stop_after > 0 && r.generated >= r.stop_after;
      }
      outcomes.push_back(o);
    }
    EXPECT_EQ(total, step.num_batched_tokens);
    EXPECT_EQ(sched.step_in_flight(), !step.empty());
    if (step.empty()) {  // nothing could run: no answer is due
      clock.Advance(absl::Milliseconds(10));
      ++steps;
      return step;
    }
    auto done = sched.OnStepDone(outcomes);
    EXPECT_TRUE(done.ok()) << done.status();
    if (done.ok()) {
      for (int64_t id : *done) {
        finished.push_back(id);
        reqs[id].finished = true;
        EXPECT_FALSE(kv.Holds(id));
      }
    }
    clock.Advance(absl::Milliseconds(10));
    ++steps;
    return step;
  }

  // The fake budget holds exactly the KV of running requests, as many tokens as computed.
  void CheckAccounting() {
    int64_t sum = 0;
    for (int64_t id : sched.running_ids()) {
      sum += kv.blocks(id);
      auto info = sched.Info(id);
      ASSERT_TRUE(info.has_value());
      EXPECT_EQ(kv.tokens(id), info->num_computed) << id;
      EXPECT_EQ(info->num_computed, reqs[id].computed) << id;
    }
    for (int64_t id : sched.waiting_ids()) EXPECT_FALSE(kv.Holds(id)) << id;
    EXPECT_EQ(kv.used_blocks(), sum);
    EXPECT_EQ(static_cast<int32_t>(kv.num_sequences()), sched.num_running());
  }

  int RunUntilIdle(int max_steps = 100000) {
    int n = 0;
    while (sched.has_work() && n < max_steps) {
      Step();
      CheckAccounting();
      ++n;
    }
    return n;
  }

  struct Req {
    int32_t prompt = 0, max_new = 0;
    int32_t stop_after = 0;
    int32_t generated = 0, computed = 0, preemptions = 0;
    int64_t fed = 0;
    bool admitted_once = false, finished = false;
  };

  FakeClock clock;
  FakeKvBudget kv;
  BatchScheduler sched;
  std::map<int64_t, Req> reqs;
  std::vector<int64_t> finished;
  std::vector<int64_t> admission_order;
  int steps = 0;
};

SchedulerConfig Config(int32_t seqs, int32_t tokens, int32_t chunk = 0) {
  SchedulerConfig c;
  c.max_num_seqs = seqs;
  c.max_num_batched_tokens = tokens;
  c.max_prefill_chunk = chunk;
  return c;
}

TEST(BatchSchedulerTest, ValidatesConfig) {
  EXPECT_TRUE(ValidateSchedulerConfig(Config(1, 1)).ok());
  EXPECT_FALSE(ValidateSchedulerConfig(Config(0, 16)).ok());
  EXPECT_FALSE(ValidateSchedulerConfig(Config(4, 0)).ok());
  EXPECT_FALSE(ValidateSchedulerConfig(Config(4, 16, -1)).ok());
}

TEST(BatchSchedulerTest, RejectsBadRequestsAtAdd) {
  SchedulerConfig c = Config(4, 64);
  c.max_model_len = 100;
  Harness h(c, /*num_blocks=*/10, /*block_size=*/8);  // 80 tokens in the whole pool
  EXPECT_TRUE(h.Add(1, 10, 10).ok());
  EXPECT_EQ(h.Add(1, 10, 10).code(), absl::StatusCode::kInvalidArgument);  // duplicate
  EXPECT_EQ(h.Add(2, 0, 10).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(h.Add(3, 10, 0).code(), absl::StatusCode::kInvalidArgument);
  absl::Status too_long = h.Add(4, 90, 20);
  EXPECT_EQ(too_long.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(too_long.message()), ::testing::HasSubstr("maximum length of 100"));
  absl::Status too_big = h.Add(5, 70, 11);  // 81 tokens: 11 blocks > 10
  EXPECT_EQ(too_big.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(too_big.message()), ::testing::HasSubstr("needs 11 KV blocks"));
  EXPECT_TRUE(h.Add(6, 70, 10).ok());  // 80 tokens: exactly the pool
  EXPECT_EQ(h.sched.num_waiting(), 2);
}

TEST(BatchSchedulerTest, ChunkedPrefillSplitsLongPromptAndMixesWithDecodes) {
  Harness h(Config(8, 8), 100, 4);
  ASSERT_TRUE(h.Add(1, 20, 5).ok());
  ScheduledStep s = h.Step();
  ASSERT_EQ(s.seqs.size(), 1u);
  EXPECT_EQ(s.seqs[0].start_pos, 0);
  EXPECT_EQ(s.seqs[0].num_tokens, 8);
  EXPECT_TRUE(s.seqs[0].is_prefill);
  EXPECT_FALSE(s.seqs[0].wants_logits);
  s = h.Step();
  EXPECT_EQ(s.seqs[0].start_pos, 8);
  EXPECT_EQ(s.seqs[0].num_tokens, 8);
  EXPECT_FALSE(s.seqs[0].wants_logits);
  ASSERT_TRUE(h.Add(2, 30, 3).ok());
  s = h.Step();  // last chunk of 1 (4 tokens) then the first chunk of 2 fills the budget
  ASSERT_EQ(s.seqs.size(), 2u);
  EXPECT_EQ(s.seqs[0].request_id, 1);
  EXPECT_EQ(s.seqs[0].start_pos, 16);
  EXPECT_EQ(s.seqs[0].num_tokens, 4);
  EXPECT_TRUE(s.seqs[0].wants_logits);
  EXPECT_EQ(s.seqs[1].request_id, 2);
  EXPECT_EQ(s.seqs[1].num_tokens, 4);
  EXPECT_FALSE(s.seqs[1].wants_logits);
  s = h.Step();  // decode of 1 comes first, then 7 prompt tokens of 2
  ASSERT_EQ(s.seqs.size(), 2u);
  EXPECT_EQ(s.seqs[0].request_id, 1);
  EXPECT_FALSE(s.seqs[0].is_prefill);
  EXPECT_EQ(s.seqs[0].start_pos, 20);
  EXPECT_EQ(s.seqs[0].num_tokens, 1);
  EXPECT_EQ(s.seqs[1].request_id, 2);
  EXPECT_EQ(s.seqs[1].start_pos, 4);
  EXPECT_EQ(s.seqs[1].num_tokens, 7);
  EXPECT_EQ(s.num_batched_tokens, 8);
  h.RunUntilIdle();
  EXPECT_EQ(h.reqs[1].generated, 5);
  EXPECT_EQ(h.reqs[2].generated, 3);
  EXPECT_EQ(h.reqs[1].fed, 20 + 5 - 1);  // the last sampled token is never fed
  EXPECT_EQ(h.reqs[2].fed, 30 + 3 - 1);
  EXPECT_EQ(h.kv.used_blocks(), 0);
}

TEST(BatchSchedulerTest, MaxPrefillChunkCapsEachChunk) {
  Harness h(Config(8, 64, /*chunk=*/10), 100, 4);
  ASSERT_TRUE(h.Add(1, 25, 2).ok());
  ASSERT_TRUE(h.Add(2, 3, 2).ok());
  ScheduledStep s = h.Step();
  ASSERT_EQ(s.seqs.size(), 2u);
  EXPECT_EQ(s.seqs[0].num_tokens, 10);
  EXPECT_EQ(s.seqs[1].num_tokens, 3);
  s = h.Step();  // decode of 2, then 10 more of 1
  ASSERT_EQ(s.seqs.size(), 2u);
  EXPECT_EQ(s.seqs[0].request_id, 2);
  EXPECT_EQ(s.seqs[0].num_tokens, 1);
  EXPECT_EQ(s.seqs[1].request_id, 1);
  EXPECT_EQ(s.seqs[1].start_pos, 10);
  EXPECT_EQ(s.seqs[1].num_tokens, 10);
}

TEST(BatchSchedulerTest, AdmitsInArrivalOrderUpToMaxSeqs) {
  Harness h(Config(/*seqs=*/2, 64), 100, 4);
  // Added out of arrival order: arrival time decides.
  ASSERT_TRUE(h.sched.Add(3, 4, 2, absl::UnixEpoch() + absl::Seconds(3)).ok());
  ASSERT_TRUE(h.sched.Add(1, 4, 2, absl::UnixEpoch() + absl::Seconds(1)).ok());
  ASSERT_TRUE(h.sched.Add(2, 4, 2, absl::UnixEpoch() + absl::Seconds(2)).ok());
  for (int64_t id : {1, 2, 3}) h.reqs[id] = Harness::Req{4, 2};
  EXPECT_THAT(h.sched.waiting_ids(), ElementsAre(1, 2, 3));
  ScheduledStep s = h.Step();
  ASSERT_EQ(s.seqs.size(), 2u);
  EXPECT_EQ(s.seqs[0].request_id, 1);
  EXPECT_EQ(s.seqs[1].request_id, 2);
  EXPECT_EQ(h.sched.num_running(), 2);
  EXPECT_EQ(h.sched.num_waiting(), 1);
  h.RunUntilIdle();
  EXPECT_THAT(h.admission_order, ElementsAre(1, 2, 3));
  EXPECT_EQ(h.sched.num_finished_total(), 3);
}

TEST(BatchSchedulerTest, HeadOfQueueIsNotOvertakenByYoungerRequests) {
  // 8 blocks of 4 tokens. 1 holds 6 blocks; 2 needs 3 blocks for its prompt and must wait; 3
  // would fit in the 2 free blocks but must not jump ahead of 2.
  Harness h(Config(8, 64), 8, 4);
  ASSERT_TRUE(h.Add(1, 24, 4).ok());
  h.Step();
  ASSERT_TRUE(h.Add(2, 12, 2).ok());
  ASSERT_TRUE(h.Add(3, 4, 2).ok());
  ScheduledStep s = h.Step();
  ASSERT_EQ(s.seqs.size(), 1u);
  EXPECT_EQ(s.seqs[0].request_id, 1);
  EXPECT_EQ(h.sched.num_waiting(), 2);
  h.RunUntilIdle();
  EXPECT_THAT(h.admission_order, ElementsAre(1, 2, 3));
  EXPECT_EQ(h.sched.num_preemptions_total(), 0);
}

TEST(BatchSchedulerTest, PreemptsTheYoungestAndItResumesToCompletion) {
  // 6 blocks of 4 tokens; three requests of 4 + 8 tokens (3 blocks each at the end) cannot all
  // grow: the youngest is preempted, recomputes later and still gets all its tokens.
  Harness h(Config(8, 64), 6, 4);
  ASSERT_TRUE(h.Add(1, 4, 8).ok());
  ASSERT_TRUE(h.Add(2, 4, 8).ok());
  ASSERT_TRUE(h.Add(3, 4, 8).ok());
  std::vector<int64_t> preempted;
  int first_preemption_step = -1;
  while (h.sched.has_work() && h.steps < 1000) {
    ScheduledStep s = h.Step();
    h.CheckAccounting();
    for (int64_t id : s.preempted) {
      if (first_preemption_step < 0) first_preemption_step = h.steps;
      preempted.push_back(id);
      // The victim is younger than every request still running.
      for (int64_t r : h.sched.running_ids()) EXPECT_LT(r, id);
    }
  }
  ASSERT_FALSE(preempted.empty());
  EXPECT_EQ(preempted[0], 3);
  EXPECT_EQ(std::count(preempted.begin(), preempted.end(), 1), 0);  // the oldest never
  EXPECT_EQ(h.sched.num_preemptions_total(), static_cast<int64_t>(preempted.size()));
  for (int64_t id : {1, 2, 3}) {
    EXPECT_TRUE(h.reqs[id].finished) << id;
    EXPECT_EQ(h.reqs[id].generated, 8) << id;
  }
  EXPECT_GE(h.reqs[3].preemptions, 1);
  // 3 fed its prompt and tokens once to completion, plus what it had computed when preempted.
  EXPECT_GT(h.reqs[3].fed, 4 + 8 - 1);
  EXPECT_EQ(h.reqs[1].fed, 4 + 8 - 1);
  EXPECT_EQ(h.kv.used_blocks(), 0);
}

TEST(BatchSchedulerTest, PreemptedRequestRecomputesPromptAndGeneratedTokens) {
  // 4 blocks of 2 tokens. 1 (2 + 6) ends at 4 blocks; 2 (2 + 2) is preempted once 1 needs
  // its block and restarts from position 0 over prompt + generated tokens.
  Harness h(Config(8, 64), 4, 2);
  ASSERT_TRUE(h.Add(1, 2, 6).ok());
  ASSERT_TRUE(h.Add(2, 2, 4).ok());
  std::optional<int32_t> generated_at_preemption;
  bool saw_recompute = false;
  while (h.sched.has_work() && h.steps < 100) {
    ScheduledStep s = h.Step();
    h.CheckAccounting();
    if (!s.preempted.empty()) {
      EXPECT_THAT(s.preempted, ElementsAre(2));
      for (const ScheduledSeq& q : s.seqs) EXPECT_NE(q.request_id, 2);
      generated_at_preemption = h.reqs[2].generated;
      EXPECT_EQ(h.sched.Info(2)->num_computed, 0);
      EXPECT_EQ(h.sched.Info(2)->state, RequestState::kWaiting);
    }
    for (const ScheduledSeq& q : s.seqs) {
      if (q.request_id == 2 && generated_at_preemption && !saw_recompute) {
        saw_recompute = true;
        EXPECT_TRUE(q.is_prefill);
        EXPECT_EQ(q.start_pos, 0);
        EXPECT_EQ(q.num_tokens, 2 + *generated_at_preemption);
        EXPECT_TRUE(q.wants_logits);
      }
    }
  }
  ASSERT_TRUE(generated_at_preemption.has_value());
  EXPECT_TRUE(saw_recompute);
  EXPECT_EQ(h.reqs[1].generated, 6);
  EXPECT_EQ(h.reqs[2].generated, 4);
  EXPECT_TRUE(h.reqs[2].finished);
}

TEST(BatchSchedulerTest, YoungestThatCannotGrowSitsOutUntilAnOlderOneNeedsItsBlocks) {
  // 3 blocks of 2 tokens. 1 (prompt 3) has a spare slot, 2 (prompt 2) fills its block. 2's
  // decode needs a block and no younger request exists: it sits out the step, keeping its KV.
  // When 1 needs a block, 2 (younger) is preempted; 1 never is.
  Harness h(Config(8, 64), 3, 2);
  ASSERT_TRUE(h.Add(1, 3, 3).ok());
  ASSERT_TRUE(h.Add(2, 2, 2).ok());
  ScheduledStep s = h.Step();
  ASSERT_EQ(s.seqs.size(), 2u);
  EXPECT_EQ(h.kv.NumFreeBlocks(), 0);
  s = h.Step();
  ASSERT_EQ(s.seqs.size(), 1u);
  EXPECT_EQ(s.seqs[0].request_id, 1);
  EXPECT_TRUE(s.preempted.empty());
  EXPECT_EQ(h.sched.Info(2)->state, RequestState::kRunning);
  EXPECT_TRUE(h.kv.Holds(2));
  s = h.Step();
  EXPECT_THAT(s.preempted, ElementsAre(2));
  EXPECT_FALSE(h.kv.Holds(2));
  h.RunUntilIdle();
  EXPECT_TRUE(h.reqs[1].finished);
  EXPECT_TRUE(h.reqs[2].finished);
  EXPECT_EQ(h.reqs[1].preemptions, 0);
  EXPECT_EQ(h.reqs[2].generated, 2);
}

// A step that failed because a sequence's KV was lost (an attention worker died) preempts it
// at once; it is recomputed from position 0 with its generated tokens and keeps its priority.
TEST(BatchSchedulerTest, LostKvRecomputesTheRequest) {
  FakeKvBudget kv(64, 4);
  FakeClock clock;
  SchedulerConfig c;
  c.max_num_batched_tokens = 64;
  BatchScheduler s(c, &kv, &clock);
  ASSERT_TRUE(s.Add(1, 6, 4).ok());
  ScheduledStep st = s.Schedule();
  ASSERT_EQ(st.seqs.size(), 1u);
  ASSERT_TRUE(s.OnStepDone({{1, true, false}}).ok());  // prefill + first token
  st = s.Schedule();
  ASSERT_EQ(st.seqs.size(), 1u);
  EXPECT_EQ(st.seqs[0].start_pos, 6);
  StepOutcome lost;
  lost.request_id = 1;
  lost.lost_kv = true;
  auto done = s.OnStepDone({lost});
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_TRUE(done->empty());
  EXPECT_EQ(kv.NumFreeBlocks(), 64);
  EXPECT_EQ(s.Info(1)->num_generated, 1);
  EXPECT_EQ(s.num_preemptions_total(), 1);
  st = s.Schedule();  // the whole stream again: 6 prompt + 1 generated
  ASSERT_EQ(st.seqs.size(), 1u);
  EXPECT_EQ(st.seqs[0].start_pos, 0);
  EXPECT_EQ(st.seqs[0].num_tokens, 7);
  EXPECT_TRUE(st.seqs[0].wants_logits);
  StepOutcome bad = lost;
  bad.produced_token = true;
  EXPECT_FALSE(s.OnStepDone({bad}).ok());
  EXPECT_TRUE(s.OnStepDone({{1, true, false}}).ok());
  // PreemptRequest between steps does the same.
  ASSERT_TRUE(s.PreemptRequest(1).ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(s.PreemptRequest(1)));  // waiting now
  EXPECT_TRUE(absl::IsNotFound(s.PreemptRequest(9)));
}

TEST(BatchSchedulerTest, StopReportedByEngineFinishesAndFreesKv) {
  Harness h(Config(8, 64), 100, 4);
  ASSERT_TRUE(h.Add(1, 5, 50).ok());
  h.StopAfter(1, 3);
  h.RunUntilIdle();
  EXPECT_EQ(h.reqs[1].generated, 3);
  EXPECT_THAT(h.finished, ElementsAre(1));
  EXPECT_FALSE(h.sched.Contains(1));
  EXPECT_EQ(h.kv.used_blocks(), 0);
}

TEST(BatchSchedulerTest, AbortFreesBlocksImmediately) {
  Harness h(Config(8, 64), 100, 4);
  ASSERT_TRUE(h.Add(1, 20, 10).ok());
  ASSERT_TRUE(h.Add(2, 8, 10).ok());
  h.Step();
  EXPECT_EQ(h.kv.used_blocks(), 5 + 2);
  ASSERT_TRUE(h.sched.Abort(1).ok());
  EXPECT_EQ(h.kv.used_blocks(), 2);
  EXPECT_FALSE(h.kv.Holds(1));
  EXPECT_EQ(h.sched.num_running(), 1);
  EXPECT_EQ(h.sched.Abort(1).code(), absl::StatusCode::kNotFound);
  // Aborted while its step is in flight: its outcome is ignored.
  ScheduledStep s = h.sched.Schedule();
  ASSERT_EQ(s.seqs.size(), 1u);
  ASSERT_TRUE(h.sched.Abort(2).ok());
  EXPECT_EQ(h.kv.used_blocks(), 0);
  auto done = h.sched.OnStepDone({{2, true, false}});
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_TRUE(done->empty());
  // Waiting requests hold nothing and leave the queue.
  ASSERT_TRUE(h.Add(3, 4, 4).ok());
  EXPECT_EQ(h.sched.num_waiting(), 1);
  ASSERT_TRUE(h.sched.Abort(3).ok());
  EXPECT_EQ(h.sched.num_waiting(), 0);
  EXPECT_EQ(h.sched.num_aborted_total(), 3);
  EXPECT_FALSE(h.sched.has_work());
}

TEST(BatchSchedulerTest, OnStepDoneRejectsInconsistentOutcomes) {
  Harness h(Config(8, 4), 100, 4);
  EXPECT_EQ(h.sched.OnStepDone({}).status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(h.Add(1, 10, 4).ok());
  ScheduledStep s = h.sched.Schedule();  // a 4-token chunk without logits
  ASSERT_EQ(s.seqs.size(), 1u);
  EXPECT_FALSE(s.seqs[0].wants_logits);
  EXPECT_FALSE(h.sched.OnStepDone({}).ok());                   // missing
  EXPECT_FALSE(h.sched.OnStepDone({{7, false, false}}).ok());  // not in the step
  EXPECT_FALSE(h.sched.OnStepDone({{1, true, false}}).ok());   // token without logits
  EXPECT_FALSE(h.sched.OnStepDone({{1, false, false}, {1, false, false}}).ok());  // twice
  EXPECT_EQ(h.sched.Info(1)->num_computed, 0);                                    // nothing applied
  EXPECT_TRUE(h.sched.OnStepDone({{1, false, false}}).ok());
  EXPECT_EQ(h.sched.Info(1)->num_computed, 4);
}

TEST(BatchSchedulerTest, WatermarkKeepsBlocksBackForRunningRequests) {
  SchedulerConfig c = Config(8, 64);
  c.admission_watermark_blocks = 3;
  Harness h(c, 6, 4);
  ASSERT_TRUE(h.Add(1, 12, 4).ok());  // 3 blocks
  ASSERT_TRUE(h.Add(2, 4, 4).ok());   // 1 block, but only 3 free and 3 kept back -> wait
  ScheduledStep s = h.Step();
  ASSERT_EQ(s.seqs.size(), 1u);
  EXPECT_EQ(h.sched.num_waiting(), 1);
  h.RunUntilIdle();
  EXPECT_TRUE(h.reqs[2].finished);
}

TEST(BatchSchedulerTest, WatermarkIsWaivedWhenNothingRuns) {
  SchedulerConfig c = Config(8, 64);
  c.admission_watermark_blocks = 4;
  Harness h(c, 6, 4);
  ASSERT_TRUE(h.Add(1, 20, 4).ok());  // 5 blocks + 4 kept back > 6, but the pool is idle
  ScheduledStep s = h.Step();
  ASSERT_EQ(s.seqs.size(), 1u);
  h.RunUntilIdle();
  EXPECT_TRUE(h.reqs[1].finished);
}

TEST(BatchSchedulerTest, EmptyStepNeedsNoAnswer) {
  Harness h(Config(8, 64), 6, 4);
  ScheduledStep s = h.sched.Schedule();
  EXPECT_TRUE(s.empty());
  EXPECT_FALSE(h.sched.step_in_flight());
  ASSERT_TRUE(h.Add(1, 4, 2).ok());
  s = h.sched.Schedule();
  EXPECT_EQ(s.seqs.size(), 1u);
  EXPECT_TRUE(h.sched.step_in_flight());
}

TEST(BatchSchedulerTest, OlderPrefillUnschedulesAYoungerDecodeItPreempts) {
  // 3 blocks of 4, chunks of 4. Step 1: 1 (prompt 8) prefills [0, 4), 2 (prompt 4) its whole
  // prompt. Step 2: 2's decode (pass 1) takes the last free block; then 1's next chunk needs a
  // block, so 2 is preempted and its decode leaves the step.
  Harness h(Config(8, 64, /*chunk=*/4), 3, 4);
  ASSERT_TRUE(h.Add(1, 8, 1).ok());
  ASSERT_TRUE(h.Add(2, 4, 2).ok());
  ScheduledStep s = h.Step();
  ASSERT_EQ(s.seqs.size(), 2u);
  EXPECT_EQ(h.kv.NumFreeBlocks(), 1);
  s = h.Step();
  EXPECT_THAT(s.preempted, ElementsAre(2));
  ASSERT_EQ(s.seqs.size(), 1u);
  EXPECT_EQ(s.seqs[0].request_id, 1);
  EXPECT_EQ(s.seqs[0].start_pos, 4);
  EXPECT_EQ(s.seqs[0].num_tokens, 4);
  EXPECT_EQ(s.num_batched_tokens, 4);
  EXPECT_FALSE(h.kv.Holds(2));
  h.CheckAccounting();
  h.RunUntilIdle();
  EXPECT_TRUE(h.reqs[1].finished);
  EXPECT_TRUE(h.reqs[2].finished);
  EXPECT_EQ(h.reqs[2].generated, 2);
}

TEST(BatchSchedulerTest, MetricsAndHeadOfLineWait) {
  Harness h(Config(1, 64), 100, 4);
  ASSERT_TRUE(h.Add(1, 4, 3).ok());
  ASSERT_TRUE(h.Add(2, 4, 3).ok());
  EXPECT_EQ(h.sched.head_of_line_wait(), absl::ZeroDuration());
  h.Step();
  EXPECT_EQ(h.sched.num_running(), 1);
  EXPECT_EQ(h.sched.num_waiting(), 1);
  EXPECT_EQ(h.sched.head_of_line_wait(), absl::Milliseconds(10));
  EXPECT_EQ(h.sched.Info(1)->first_scheduled, absl::UnixEpoch());
  EXPECT_FALSE(h.sched.Info(2)->first_scheduled.has_value());
  h.RunUntilIdle();
  EXPECT_EQ(h.sched.num_finished_total(), 2);
}

// Randomized: arrivals, early stops and aborts over a small KV pool, checking the budget and
// the block accounting after every step, FCFS admission, and that the head of the queue is
// admitted in the first step whose budget and free blocks allow it.
struct SimParams {
  uint64_t seed;
  int num_requests;
  double abort_prob;
};

void PrintTo(const SimParams& p, std::ostream* os) {
  *os << "seed " << p.seed << ", " << p.num_requests << " requests, abort " << p.abort_prob;
}

class SchedulerSimTest : public ::testing::TestWithParam<SimParams> {};

TEST_P(SchedulerSimTest, EveryRequestFinishesAndAccountingHolds) {
  const SimParams p = GetParam();
  std::mt19937_64 rng(p.seed);
  SchedulerConfig c = Config(/*seqs=*/6, /*tokens=*/24, /*chunk=*/16);
  Harness h(c, /*num_blocks=*/48, /*block_size=*/4);
  std::uniform_int_distribution<int> prompt_len(1, 60), max_new(1, 40), burst(0, 3);
  std::bernoulli_distribution arrive(0.3), early_stop(0.3), do_abort(p.abort_prob);
  int64_t next_id = 1;
  int64_t aborted = 0;
  int head_wait = 0, max_head_wait = 0;
  int64_t head = -1;
  int admissions_checked = 0;
  while ((next_id <= p.num_requests || h.sched.has_work()) && h.steps < 200000) {
    if (next_id <= p.num_requests && arrive(rng)) {
      for (int b = burst(rng); b > 0 && next_id <= p.num_requests; --b) {
        const int64_t id = next_id++;
        ASSERT_TRUE(h.Add(id, prompt_len(rng), max_new(rng)).ok());
        if (early_stop(rng)) h.StopAfter(id, 1 + static_cast<int32_t>(rng() % 10));
      }
    }
    if (h.sched.has_work() && do_abort(rng)) {
      std::vector<int64_t> ids = h.sched.running_ids();
      for (int64_t id : h.sched.waiting_ids()) ids.push_back(id);
      const int64_t id = ids[rng() % ids.size()];
      ASSERT_TRUE(h.sched.Abort(id).ok());
      h.reqs.erase(id);
      ++aborted;
      h.CheckAccounting();
    }
    // Predict whether the head of the queue fits this step: budget and blocks of the running
    // requests' needs (decodes, then prefill chunks), then the head's first chunk.
    std::vector<int64_t> waiting = h.sched.waiting_ids();
    bool head_fits = false;
    if (!waiting.empty() && h.sched.num_running() < c.max_num_seqs) {
      int32_t budget = c.max_num_batched_tokens;
      int64_t blocks = 0;
      bool all_fit = true;
      auto cap = [&](int32_t b) { return std::min(b, c.max_prefill_chunk); };
      std::vector<int64_t> running = h.sched.running_ids();
      for (int pass = 0; pass < 2; ++pass) {
        for (int64_t id : running) {
          RequestInfo info = *h.sched.Info(id);
          const int32_t known = info.prompt_len + info.num_generated;
          const bool decoding = info.num_generated > 0 && info.num_computed == known - 1;
          if (decoding != (pass == 0)) continue;
          const int32_t n = decoding ? 1 : std::min(known - info.num_computed, cap(budget));
          if (n > budget || n == 0) all_fit = false;
          budget -= std::min(n, budget);
          blocks += h.kv.BlocksNeeded(id, n);
        }
      }
      const RequestInfo hi = *h.sched.Info(waiting[0]);
      if (all_fit && budget > 0) {
        const int32_t n = std::min(hi.prompt_len + hi.num_generated, cap(budget));
        head_fits = blocks + h.kv.BlocksNeeded(waiting[0], n) <= h.kv.NumFreeBlocks();
      }
    }
    ScheduledStep s = h.Step();
    h.CheckAccounting();
    if (head_fits) {
      ++admissions_checked;
      EXPECT_TRUE(s.preempted.empty());
      bool admitted = std::any_of(s.seqs.begin(), s.seqs.end(), [&](const ScheduledSeq& q) {
        return q.request_id == waiting[0];
      });
      EXPECT_TRUE(admitted) << "head " << waiting[0] << " fit but was not admitted at step "
                            << h.steps;
    }
    std::vector<int64_t> now_waiting = h.sched.waiting_ids();
    // FCFS: whoever left the queue this step is older than everyone still in it.
    for (const ScheduledSeq& q : s.seqs) {
      if (std::find(waiting.begin(), waiting.end(), q.request_id) == waiting.end()) continue;
      for (int64_t w : now_waiting) EXPECT_LT(q.request_id, w) << "admitted past " << w;
    }
    const int64_t new_head = now_waiting.empty() ? -1 : now_waiting[0];
    head_wait = new_head == head ? head_wait + 1 : 0;
    head = new_head;
    max_head_wait = std::max(max_head_wait, head_wait);
    for (int64_t id : s.preempted) {
      for (int64_t r : h.sched.running_ids()) EXPECT_LT(r, id) << "preempted " << id;
    }
    if (::testing::Test::HasFailure()) break;
  }
  EXPECT_FALSE(h.sched.has_work());
  EXPECT_EQ(static_cast<int64_t>(h.finished.size()) + aborted, p.num_requests);
  EXPECT_EQ(h.kv.used_blocks(), 0);
  EXPECT_GT(admissions_checked, 0);
  for (const auto& [id, r] : h.reqs) {
    EXPECT_TRUE(r.finished) << id;
    EXPECT_EQ(r.generated, r.stop_after > 0 ? std::min(r.stop_after, r.max_new) : r.max_new) << id;
  }
  // Without preemption, first admissions follow arrival (= id) order.
  if (h.sched.num_preemptions_total() == 0) {
    EXPECT_TRUE(std::is_sorted(h.admission_order.begin(), h.admission_order.end()));
  }
  // Bound on how long one request stays at the head: it waits only for running requests to
  // finish (no one is admitted past it), and the oldest running request advances every step.
  const int bound = c.max_num_seqs * (60 + 40);
  EXPECT_LE(max_head_wait, bound);
  RecordProperty("steps", h.steps);
  RecordProperty("preemptions", static_cast<int>(h.sched.num_preemptions_total()));
  RecordProperty("max_head_wait", max_head_wait);
  std::printf("seed %llu: %d steps, %lld preemptions, max head-of-line wait %d steps\n",
              static_cast<unsigned long long>(p.seed), h.steps,
              static_cast<long long>(h.sched.num_preemptions_total()), max_head_wait);
}

INSTANTIATE_TEST_SUITE_P(Seeds, SchedulerSimTest,
                         ::testing::Values(SimParams{1, 300, 0.0}, SimParams{2, 300, 0.0},
                                           SimParams{3, 300, 0.02}, SimParams{4, 500, 0.05},
                                           SimParams{5, 500, 0.0}));

}  // namespace
}  // namespace kvasir::sched

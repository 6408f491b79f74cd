// Iteration-level scheduler of a decoder worker: continuous batching under a token budget per
// step, chunked prefill mixed with decodes, preemption by recompute when KV blocks run out, and
// FCFS order without starvation (vLLM v1's policy, with priority by arrival).
//
// One thread owns it; the engine loop is
//   Add(...)                     for each new request (and Abort(id) when a client goes away)
//   step = Schedule()            who runs this step, how many tokens, from which position
//   run the model on step.seqs   (KV for them is already reserved through the KvBudget)
//   OnStepDone(outcomes)         which requests produced a token or finished
// A request's token stream is its prompt followed by the tokens generated so far. Each step
// feeds a slice [start_pos, start_pos + num_tokens) of that stream: a decode feeds the last
// sampled token, a prefill chunk a run of prompt tokens. A preempted request loses its KV (the
// scheduler frees it through the KvBudget) and later recomputes the whole stream, prompt and
// generated tokens alike, as a prefill from position 0.
//
// Priority is (arrival time, order of Add): older first. Decodes of running requests are
// scheduled first, then prefill chunks of running requests, then waiting requests are admitted
// in priority order while the budget, the sequence limit and free KV blocks allow. The head of
// the waiting queue is never overtaken by a younger request. When a running request needs
// blocks that are not free, the youngest running request younger than it is preempted; an
// older request is never preempted to make room for a younger one, so the oldest request
// always progresses.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "absl/time/time.h"
#include "common/status.h"
#include "scheduler/clock.h"
#include "scheduler/kv_budget.h"

namespace kvasir::sched {

struct SchedulerConfig {
  int32_t max_num_seqs = 256;             // running requests (so also entries per step)
  int32_t max_num_batched_tokens = 2048;  // tokens fed per step, decodes and prefill chunks
  int32_t max_prefill_chunk = 0;          // tokens of one prefill chunk; 0: the budget alone
  int64_t max_model_len = 0;              // limit on prompt + max_new_tokens; 0: none
  // Free blocks kept back when admitting a waiting request, so that running requests can grow
  // a while before someone has to be preempted (waived while nothing runs).
  int64_t admission_watermark_blocks = 0;
};

absl::Status ValidateSchedulerConfig(const SchedulerConfig& config);

struct ScheduledSeq {
  int64_t request_id = 0;
  int32_t start_pos = 0;    // position of the first fed token in prompt + generated
  int32_t num_tokens = 0;   // tokens fed this step, >= 1
  bool is_prefill = false;  // false: a decode feeding the last sampled token
  // The slice ends at the last known token: the engine samples the next token after it (the
  // last chunk of a prefill, or a decode). Non-final prefill chunks need no logits.
  bool wants_logits = false;
};

struct ScheduledStep {
  std::vector<ScheduledSeq> seqs;  // decodes first, then prefill chunks; oldest first in each
  // Requests preempted while building this step. Their KV is already released through the
  // KvBudget; the engine drops its per-sequence cache state but keeps the generated tokens, and
  // the request later comes back in `seqs` as a prefill from position 0.
  std::vector<int64_t> preempted;
  int32_t num_batched_tokens = 0;  // sum of num_tokens
  bool empty() const { return seqs.empty(); }
};

// What happened to one scheduled request in the step just run.
struct StepOutcome {
  int64_t request_id = 0;
  bool produced_token = false;  // a token was sampled (only where the entry wanted logits)
  bool finished = false;        // stop token, stop string or error: the request is done
  // The step failed for it because its KV was lost (an attention worker died): nothing of the
  // step counts, and it is preempted at once to be recomputed from its tokens.
  bool lost_kv = false;
};

enum class RequestState { kWaiting, kRunning };

struct RequestInfo {
  RequestState state = RequestState::kWaiting;
  int32_t prompt_len = 0;
  int32_t max_new_tokens = 0;
  int32_t num_generated = 0;
  int32_t num_computed = 0;  // tokens of prompt + generated whose KV is stored
  int32_t num_preemptions = 0;
  absl::Time arrival;
  std::optional<absl::Time> first_scheduled;
};

class BatchScheduler {
 public:
  // The config must pass ValidateSchedulerConfig. budget and clock must outlive the scheduler.
  BatchScheduler(const SchedulerConfig& config, KvBudget* budget, Clock* clock);

  // Queues a request. InvalidArgument for a duplicate id, an empty prompt, max_new_tokens < 1,
  // or a request longer than max_model_len or than the whole KV pool can ever hold.
  absl::Status Add(int64_t request_id, int32_t prompt_len, int32_t max_new_tokens,
                   absl::Time arrival);
  absl::Status Add(int64_t request_id, int32_t prompt_len, int32_t max_new_tokens) {
    return Add(request_id, prompt_len, max_new_tokens, clock_->Now());
  }

  // Builds the next step and reserves its KV. A non-empty step must be answered by
  // OnStepDone before the next Schedule(); an empty one (nothing can run now) needs no answer.
  ScheduledStep Schedule();

  // Reports the step returned by the last Schedule(): one outcome per scheduled request (those
  // aborted meanwhile may be left out). Returns the ids that finished, either as reported or
  // because they reached max_new_tokens; their KV is freed and they are forgotten. On error
  // nothing changes.
  absl::StatusOr<std::vector<int64_t>> OnStepDone(const std::vector<StepOutcome>& outcomes);

  // Drops a request (client went away) and frees its KV at once. NotFound for unknown ids.
  absl::Status Abort(int64_t request_id);

  // Preempts a running request now (the KV is shared and its manager wants its blocks for an
  // older request elsewhere): frees its KV; it waits again and later recomputes, keeping its
  // priority. Between steps only. NotFound for unknown ids, FailedPrecondition when it is not
  // running or a step is in flight.
  absl::Status PreemptRequest(int64_t request_id);

  bool Contains(int64_t request_id) const { return requests_.count(request_id) > 0; }
  std::optional<RequestInfo> Info(int64_t request_id) const;
  bool step_in_flight() const { return in_flight_; }
  bool has_work() const { return !requests_.empty(); }

  // Metrics.
  int32_t num_running() const { return static_cast<int32_t>(running_.size()); }
  int32_t num_waiting() const { return static_cast<int32_t>(waiting_.size()); }
  int64_t num_preemptions_total() const { return num_preemptions_; }
  int64_t num_finished_total() const { return num_finished_; }
  int64_t num_aborted_total() const { return num_aborted_; }
  // How long the head of the waiting queue has waited since arrival (zero when none waits).
  absl::Duration head_of_line_wait() const;
  // Ids in priority order.
  std::vector<int64_t> running_ids() const;
  std::vector<int64_t> waiting_ids() const;

  const SchedulerConfig& config() const { return config_; }

 private:
  // (arrival, order of Add, id): the priority; smaller is older.
  using Key = std::tuple<absl::Time, uint64_t, int64_t>;

  struct Request {
    int64_t id = 0;
    Key key;
    int32_t prompt_len = 0;
    int32_t max_new_tokens = 0;
    int32_t num_generated = 0;
    int32_t num_computed = 0;
    int32_t num_preemptions = 0;
    RequestState state = RequestState::kWaiting;
    std::optional<absl::Time> first_scheduled;
    int32_t known() const { return prompt_len + num_generated; }
    // Only the last sampled token is left to feed.
    bool decoding() const { return num_generated > 0 && num_computed == known() - 1; }
  };

  // Reserves KV for up to `want` tokens of r, preempting younger running requests when blocks
  // are short. partial: settle for fewer tokens that fit before preempting. Returns the tokens
  // reserved (0: none).
  int32_t Reserve(Request& r, int32_t want, bool partial, ScheduledStep& step, int32_t& budget);
  void Preempt(Request& victim, ScheduledStep& step, int32_t& budget);
  // Frees the KV of a running request and moves it back to the waiting queue.
  void Evict(Request& victim);
  void AddEntry(Request& r, int32_t n, ScheduledStep& step, int32_t& budget);
  int32_t ChunkCap(int32_t budget) const;
  void Finish(Request& r);

  SchedulerConfig config_;
  KvBudget* kv_;
  Clock* clock_;
  uint64_t next_order_ = 0;
  std::unordered_map<int64_t, Request> requests_;
  std::set<Key> waiting_;
  std::set<Key> running_;

  bool in_flight_ = false;
  std::vector<ScheduledSeq> in_flight_seqs_;
  std::unordered_set<int64_t> aborted_in_flight_;
  // While building a step: request id -> index in step.seqs (entries of preempted requests
  // are erased).
  std::unordered_map<int64_t, size_t> scheduled_;

  int64_t num_preemptions_ = 0;
  int64_t num_finished_ = 0;
  int64_t num_aborted_ = 0;
};

}  // namespace kvasir::sched

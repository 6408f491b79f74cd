// The decoder's engine: one thread owns the model runner, the batch scheduler and every running
// sequence; other threads hand it requests and cancellations through a queue (STYLE.md #6).
//
// Life of a request: Submit() queues it (bounded: a full queue is ResourceExhausted, the
// router's 429) -> the engine thread adds it to the iteration-level scheduler
// (scheduler/batch_scheduler.h: continuous batching under a token budget, chunked prefill mixed
// with decodes, FCFS without starvation, KV grown block by block and preemption by recompute
// when blocks run out) -> each step runs what the scheduler chose -> sampled tokens are reported
// through the request's callback (called on the engine thread: it must not block) -> finish at
// EOS / stop id / max_tokens / context end, or Cancel(); the KV blocks are freed at once.
#pragma once

#include <atomic>
#include <condition_variable>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/status.h"
#include "model/model_runner.h"
#include "model/sampling/sampler.h"
#include "decoder/executor_budget.h"
#include "scheduler/batch_scheduler.h"

namespace kvasir {

// Events of one request, in order. The last one has finished = true; when a token ends the
// request (EOS, stop id, max_tokens, context end) it travels in that last event.
struct EngineEvent {
  uint64_t id = 0;
  std::vector<int32_t> tokens;        // new tokens of this step (usually one)
  std::vector<SampleResult> samples;  // logprob info of the same tokens
  bool finished = false;
  std::string finish_reason;          // "stop", "length", "abort", "error"
  absl::Status error;                 // set when finish_reason == "error"
  // Final event: KV tokens the request held per (layer, KV head) at its last step (below its
  // length when a kv_policy evicted some); -1 when the decoder cannot tell.
  int64_t kv_tokens_kept = -1;
};

struct EngineRequest {
  uint64_t id = 0;
  std::vector<int32_t> prompt;
  SamplingParams params;  // validated by the caller against the model (ValidateSamplingParams)
  // Tokens already generated for this request elsewhere (a stream migrated from a decoder that
  // died): continued from, not reported again; they count toward max_tokens.
  std::vector<int32_t> generated;
  // Head-aware KV eviction after the prompt (kvcache/eviction/kv_policy.h); unset or full:
  // every token's KV is kept.
  std::optional<KvPolicy> kv_policy;
  std::function<void(EngineEvent)> on_event;
};

struct EngineConfig {
  int32_t max_num_seqs = 64;
  int32_t max_num_batched_tokens = 512;
  int32_t max_waiting = 1024;  // queued requests before Submit refuses
  // Free KV blocks kept back when admitting while others run (room to grow before preempting),
  // as a fraction of the pool.
  double admission_watermark = 0.01;
};

struct EngineStats {
  int64_t running = 0;
  int64_t waiting = 0;
  int64_t kv_blocks_total = 0;
  int64_t kv_blocks_used = 0;
  int64_t steps = 0;
  int64_t preemptions = 0;  // total, since start
  int64_t kv_evicted_blocks = 0;  // returned to the pool by kv_policy eviction, since start
  // Prefix caching since start: prompt tokens looked up, and those whose KV was found.
  int64_t prefix_queries_tokens = 0;
  int64_t prefix_hit_tokens = 0;
  // Wall time since start spent in the runner's Forward() and in the whole step (scheduling,
  // batch building, Forward, sampling, events): their difference is the engine's own cost.
  double forward_seconds = 0.0;
  double step_seconds = 0.0;
};

// What the router's request path needs from a decoder: the local Engine, or decoder workers
// reached over gRPC (transport/decoder_grpc.h).
class EngineHandle {
 public:
  virtual ~EngineHandle() = default;
  // Fails without queuing: InvalidArgument (does not fit), ResourceExhausted (queue full),
  // Unavailable (no decoder / shutting down). on_event is called from another thread and must
  // not block.
  virtual absl::Status Submit(EngineRequest request) = 0;
  // Idempotent; unknown ids are ignored. The request gets a final "abort" event.
  virtual void Cancel(uint64_t id) = 0;
  virtual EngineStats stats() const = 0;
  virtual const ModelConfig& model_config() const = 0;
  // False while no decoder can take requests (the router's /health says 503).
  virtual bool healthy() const { return true; }
};

class Engine : public EngineHandle {
 public:
  // The runner's kv() holds the KV (admission reserves capacity there).
  Engine(StepRunner* runner, EngineConfig config);
  ~Engine();  // stops the thread; pending requests finish with "abort"

  void Start();
  void Stop();

  // Fails with InvalidArgument (prompt too long for the context or the whole KV pool) or
  // ResourceExhausted (waiting queue full) without queuing.
  absl::Status Submit(EngineRequest request) override;
  // Idempotent; unknown ids are ignored. The request gets a final "abort" event.
  void Cancel(uint64_t id) override;

  EngineStats stats() const override;
  const ModelConfig& model_config() const override { return runner_->config(); }

 private:
  struct Seq {
    EngineRequest req;
    int64_t seq_id = 0;  // the scheduler's request id and the KV sequence id
    std::unique_ptr<Sampler> sampler;
    // Set when the runner samples this request on its device (no penalties, no logprobs).
    std::optional<RunnerSampling> device_sampling;
    std::vector<int32_t> stream;  // prompt + generated tokens
    int32_t max_new = 0;          // max_tokens capped by the context
    std::string stop_reason;      // set when a token ends the request
    // Times its KV was lost with an attention worker, counted once per loss: the failed steps
    // and the manager's notices until the sequence completes a step again are one loss.
    int32_t kv_losses = 0;
    bool kv_loss_open = false;  // lost, not yet recomputed through a successful step
    std::chrono::steady_clock::time_point kv_loss_since;  // when the open loss began
    int64_t kv_tokens_kept = -1;  // after its last step (KvCapacity::KvTokensHeld)
  };
  // Its KV was lost (an attention worker died, froze, or a step on it failed): true when it is
  // to be recomputed, false when it must end with an error: the kMaxKvLosses + 1-th distinct
  // loss, or no successful step for kKvRecoveryTime since the loss (the workers left keep
  // failing). `why` is the error then.
  bool CountKvLoss(Seq& s, absl::Status* why);
  static bool Compresses(const Seq& s) {
    return s.req.kv_policy && s.req.kv_policy->kind != KvPolicyKind::kFull;
  }
  void LoseKv(int64_t seq_id);
  static constexpr int32_t kMaxKvLosses = 3;
  static constexpr std::chrono::seconds kKvRecoveryTime{30};
  // Consecutive forward steps that failed with lost KV: the next step waits a little longer
  // (20 ms doubling, at most 500 ms) so that the KV manager can notice the dead worker.
  int32_t failed_steps_ = 0;
  void Loop();
  void RunStep();
  // Reports the final event (`last`, if given, carries the final token) and forgets the
  // sequence; its KV is already freed by the scheduler.
  void Finish(int64_t seq_id, const std::string& reason, absl::Status error = absl::OkStatus(),
              EngineEvent* last = nullptr);

  StepRunner* runner_;
  KvCapacity* attention_;
  const EngineConfig config_;

  mutable absl::Mutex mu_;
  absl::CondVar cv_;
  std::deque<EngineRequest> incoming_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> cancels_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  EngineStats stats_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;

  // Engine-thread state.
  std::unique_ptr<ExecutorBudget> budget_;
  sched::SystemClock clock_;
  std::unique_ptr<sched::BatchScheduler> scheduler_;
  std::unordered_map<int64_t, std::unique_ptr<Seq>> seqs_;  // by seq_id
  int64_t next_seq_id_ = 1;
  std::mt19937_64 seed_rng_{std::random_device{}()};  // seeds of unseeded device-sampled requests
  bool blocked_ = false;  // work waits but nothing could be scheduled (KV held elsewhere)
};

}  // namespace kvasir

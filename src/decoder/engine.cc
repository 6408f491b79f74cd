#include "decoder/engine.h"

#include <algorithm>
#include <chrono>

#include "common/logging.h"
#include "decoder/executor_budget.h"
#include "scheduler/clock.h"

namespace kvasir {

namespace {

// Requests the runner can sample itself: no penalties and no logprobs (both need the logits
// on the host). Unseeded requests get a seed here, so their stream stays one RNG's.
std::optional<RunnerSampling> DeviceSampling(const SamplingParams& p, uint64_t random_seed) {
  if (p.repetition_penalty != 1.0f || p.presence_penalty != 0.0f ||
      p.frequency_penalty != 0.0f || p.logprobs > 0) {
    return std::nullopt;
  }
  RunnerSampling s;
  s.temperature = p.temperature;
  s.top_k = p.top_k;
  s.top_p = p.top_p;
  s.min_p = p.min_p;
  s.seed = p.seed.value_or(random_seed);
  return s;
}

}  // namespace

Engine::Engine(StepRunner* runner, EngineConfig config)
    : runner_(runner), attention_(runner->kv()), config_(config) {
  // Prefix caching shares the KV of equal stream prefixes, except where a compressing kv_policy
  // rewrites a sequence's KV. Called on the engine thread (from Schedule), which owns seqs_.
  budget_ = std::make_unique<ExecutorBudget>(attention_, [this](int64_t seq_id) {
    auto it = seqs_.find(seq_id);
    if (it == seqs_.end() || Compresses(*it->second)) return std::span<const int32_t>();
    return std::span<const int32_t>(it->second->stream);
  });
  sched::SchedulerConfig sc;
  sc.max_num_seqs = config.max_num_seqs;
  sc.max_num_batched_tokens = config.max_num_batched_tokens;
  sc.max_model_len = runner->config().max_position_embeddings;
  sc.admission_watermark_blocks =
      static_cast<int64_t>(config.admission_watermark * budget_->NumTotalBlocks());
  scheduler_ = std::make_unique<sched::BatchScheduler>(sc, budget_.get(), &clock_);
  // A KV pool shared with other decoders serves older requests first: the router's request id
  // is its arrival order. Called on the engine thread (from Grow), which owns seqs_.
  attention_->SetPriorityFn([this](int64_t seq_id) -> int64_t {
    auto it = seqs_.find(seq_id);
    return it == seqs_.end() ? seq_id : static_cast<int64_t>(it->second->req.id);
  });
}

Engine::~Engine() { Stop(); }

void Engine::Start() {
  absl::MutexLock lock(&mu_);
  if (!thread_.joinable()) thread_ = std::thread([this] { Loop(); });
}

void Engine::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  cv_.SignalAll();
  if (thread_.joinable()) thread_.join();
}

absl::Status Engine::Submit(EngineRequest request) {
  const ModelConfig& c = runner_->config();
  const int64_t plen = static_cast<int64_t>(request.prompt.size());
  if (plen == 0) return absl::InvalidArgumentError("empty prompt");
  if (static_cast<int64_t>(request.generated.size()) >=
      std::min<int64_t>(request.params.max_tokens, c.max_position_embeddings - plen)) {
    return absl::InvalidArgumentError("a resumed request has nothing left to generate");
  }
  if (plen >= c.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt of ", plen, " tokens does not fit the context of ", c.max_position_embeddings,
        " tokens"));
  }
  if (request.kv_policy && request.kv_policy->kind != KvPolicyKind::kFull) {
    RETURN_IF_ERROR(ValidateKvPolicy(*request.kv_policy));
    if (!attention_->SupportsKvPolicies()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "kv_policy ", std::string(KvPolicyName(request.kv_policy->kind)),
          " is not supported where this decoder keeps its KV (attention workers or the GPU "
          "pool); use kv_policy full"));
    }
  }
  const int64_t total = std::min<int64_t>(plen + request.params.max_tokens, c.max_position_embeddings);
  if (absl::Status fits = attention_->CheckFits(total); !fits.ok()) {
    if (absl::IsUnavailable(fits)) return fits;  // attention workers are down: not for good
    return absl::InvalidArgumentError(absl::StrCat("prompt + max_tokens (", total,
                                                   " tokens) does not fit: ", fits.message(),
                                                   "; lower max_tokens"));
  }
  {
    absl::MutexLock lock(&mu_);
    if (stop_) return absl::UnavailableError("engine is shutting down");
    if (static_cast<int64_t>(incoming_.size()) + stats_.waiting >= config_.max_waiting) {
      return absl::ResourceExhaustedError(
          absl::StrCat("request queue is full (", config_.max_waiting, " waiting)"));
    }
    incoming_.push_back(std::move(request));
  }
  cv_.Signal();
  return absl::OkStatus();
}

void Engine::Cancel(uint64_t id) {
  {
    absl::MutexLock lock(&mu_);
    cancels_.push_back(id);
  }
  cv_.Signal();
}

EngineStats Engine::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

void Engine::Finish(int64_t seq_id, const std::string& reason, absl::Status error,
                    EngineEvent* last) {
  auto it = seqs_.find(seq_id);
  if (it == seqs_.end()) return;
  std::unique_ptr<Seq> s = std::move(it->second);
  seqs_.erase(it);
  EngineEvent ev;
  if (last) ev = std::move(*last);  // the final token and the finish travel together
  ev.id = s->req.id;
  ev.finished = true;
  ev.finish_reason = reason;
  ev.error = std::move(error);
  ev.kv_tokens_kept = s->kv_tokens_kept;
  if (s->req.on_event) s->req.on_event(std::move(ev));
}

void Engine::Loop() {
  const ModelConfig& c = runner_->config();
  while (true) {
    std::deque<EngineRequest> incoming;
    std::vector<uint64_t> cancels;
    bool stopping;
    {
      absl::MutexLock lock(&mu_);
      auto news = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stop_ || !incoming_.empty() || !cancels_.empty();
      };
      if (failed_steps_ > 0) {
        // The last steps lost KV with an attention worker: give the KV manager time to notice
        // it before recomputing there again (woken early by new work or Stop).
        const int64_t ms = std::min<int64_t>(int64_t{20} << std::min(failed_steps_ - 1, 5), 500);
        if (!news()) cv_.WaitWithTimeout(&mu_, absl::Milliseconds(ms));
      } else if (blocked_) {
        // Work waits but nothing could be scheduled: the KV it needs is held by other decoders
        // sharing the attention workers. Poll.
        if (!news()) cv_.WaitWithTimeout(&mu_, absl::Milliseconds(5));
      } else {
        while (!news() && !scheduler_->has_work()) cv_.Wait(&mu_);
      }
      incoming.swap(incoming_);
      cancels.swap(cancels_);
      stopping = stop_;
    }
    for (EngineRequest& r : incoming) {
      auto s = std::make_unique<Seq>();
      while (attention_->Contains(next_seq_id_) || seqs_.count(next_seq_id_)) ++next_seq_id_;
      s->seq_id = next_seq_id_++;
      const int32_t plen = static_cast<int32_t>(r.prompt.size());
      const int32_t resumed = static_cast<int32_t>(r.generated.size());
      s->max_new = std::min(r.params.max_tokens, c.max_position_embeddings - plen);
      s->stream = r.prompt;
      s->stream.insert(s->stream.end(), r.generated.begin(), r.generated.end());
      s->sampler = std::make_unique<Sampler>(r.params, r.prompt);
      s->sampler->Resume(r.generated);
      if (runner_->samples_on_device()) {
        s->device_sampling = DeviceSampling(r.params, seed_rng_());
      }
      s->req = std::move(r);
      const int64_t id = s->seq_id;
      // A resumed stream prefills its generated tokens with the prompt.
      const int32_t left = s->max_new - resumed;
      absl::Status added = left < 1 ? absl::InvalidArgumentError("nothing left to generate")
                                    : scheduler_->Add(id, plen + resumed, left);
      seqs_[id] = std::move(s);
      if (!added.ok()) Finish(id, "error", added);
    }
    for (uint64_t rid : cancels) {
      for (auto& [id, s] : seqs_) {
        if (s->req.id != rid) continue;
        (void)scheduler_->Abort(id);  // frees its KV
        Finish(id, "abort");
        break;
      }
    }
    if (stopping) {
      std::vector<int64_t> ids;
      for (auto& [id, s] : seqs_) ids.push_back(id);
      for (int64_t id : ids) {
        (void)scheduler_->Abort(id);
        Finish(id, "abort");
      }
      break;
    }
    const auto step_start = std::chrono::steady_clock::now();
    RunStep();
    const double step_secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - step_start).count();
    {
      absl::MutexLock lock(&mu_);
      stats_.running = scheduler_->num_running();
      stats_.waiting = scheduler_->num_waiting();
      stats_.preemptions = scheduler_->num_preemptions_total();
      const KvUsage u = attention_->Usage();
      stats_.kv_blocks_total = u.blocks_total;
      stats_.kv_blocks_used = u.blocks_used;
      stats_.kv_evicted_blocks = u.evicted_blocks_total;
      stats_.prefix_queries_tokens = u.prefix_queries_tokens;
      stats_.prefix_hit_tokens = u.prefix_hit_tokens;
      stats_.step_seconds += step_secs;
    }
  }
  {
    absl::MutexLock lock(&mu_);
    stats_.running = stats_.waiting = 0;
    stats_.kv_blocks_used = attention_->Usage().blocks_used;
  }
}

bool Engine::CountKvLoss(Seq& s, absl::Status* why) {
  const auto now = std::chrono::steady_clock::now();
  if (!s.kv_loss_open) {
    s.kv_loss_open = true;
    s.kv_loss_since = now;
    ++s.kv_losses;
  }
  if (s.kv_losses > kMaxKvLosses) {
    *why = absl::UnavailableError(absl::StrCat("the request's KV was lost with attention workers ",
                                               s.kv_losses, " times"));
    return false;
  }
  if (now - s.kv_loss_since > kKvRecoveryTime) {
    *why = absl::UnavailableError(absl::StrCat(
        "the request's KV was lost with an attention worker and could not be rebuilt within ",
        kKvRecoveryTime.count(), " s"));
    return false;
  }
  return true;
}

void Engine::LoseKv(int64_t seq_id) {
  auto it = seqs_.find(seq_id);
  if (it == seqs_.end() || !scheduler_->Contains(seq_id)) return;
  absl::Status why;
  if (!CountKvLoss(*it->second, &why)) {
    (void)scheduler_->Abort(seq_id);
    Finish(seq_id, "error", why);
    return;
  }
  (void)scheduler_->PreemptRequest(seq_id);
}

void Engine::RunStep() {
  const ModelConfig& c = runner_->config();
  for (int64_t id : budget_->TakeLost()) LoseKv(id);
  // The shared pool's manager asks for room for an older request on another decoder (or this
  // one), or a worker holding their KV died: recompute these later.
  for (int64_t id : attention_->TakePreemptions()) {
    if (scheduler_->PreemptRequest(id).ok()) {
      SPDLOG_DEBUG("sequence {} preempted for an older request", id);
    }
  }
  sched::ScheduledStep step = scheduler_->Schedule();
  // Requests whose KV could not grow for a reason other than "no room now" end with that error.
  for (auto& [id, status] : budget_->TakeFailures()) {
    if (!scheduler_->Contains(id)) continue;
    (void)scheduler_->Abort(id);
    std::erase_if(step.seqs, [id = id](const sched::ScheduledSeq& s) { return s.request_id == id; });
    Finish(id, "error", status);
  }
  blocked_ = step.empty() && scheduler_->has_work();
  if (blocked_) {
    // Nothing can run. A request that no longer fits the KV pool at all (attention workers
    // died) would wait forever: end it.
    std::vector<std::pair<int64_t, absl::Status>> doomed;
    for (const auto& [id, s] : seqs_) {
      const int64_t total = static_cast<int64_t>(s->req.prompt.size()) + s->max_new;
      if (absl::Status fits = attention_->CheckFits(total); !fits.ok()) {
        doomed.emplace_back(id, absl::UnavailableError(absl::StrCat(
                                    "the request no longer fits the KV pool: ", fits.message())));
      }
    }
    for (auto& [id, st] : doomed) {
      (void)scheduler_->Abort(id);
      Finish(id, "error", st);
    }
  }
  if (step.empty()) return;
  std::vector<SequenceInput> batch;
  batch.reserve(step.seqs.size());
  for (const sched::ScheduledSeq& ss : step.seqs) {
    const Seq& s = *seqs_.at(ss.request_id);
    SequenceInput in;
    in.seq_id = ss.request_id;
    in.tokens.assign(s.stream.begin() + ss.start_pos,
                     s.stream.begin() + ss.start_pos + ss.num_tokens);
    in.start_pos = ss.start_pos;
    in.want_logits = ss.wants_logits;
    if (s.req.kv_policy) in.kv_policy = &*s.req.kv_policy;
    in.prompt_len = static_cast<int32_t>(s.req.prompt.size());
    if (s.device_sampling && ss.wants_logits) {
      in.sampling = s.device_sampling;
      in.sampling->step = s.stream.size() - s.req.prompt.size();
    }
    batch.push_back(std::move(in));
  }
  const auto forward_start = std::chrono::steady_clock::now();
  auto out = runner_->Forward(batch);
  {
    absl::MutexLock lock(&mu_);
    ++stats_.steps;
    stats_.forward_seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - forward_start).count();
  }
  std::vector<sched::StepOutcome> outcomes;
  std::unordered_map<int64_t, EngineEvent> last;  // final token events, sent with the finish
  if (!out.ok()) {
    SPDLOG_ERROR("forward step failed: {}", out.status().ToString());
    // An attention worker that died or froze loses (or withholds) the KV of the sequences it
    // held: they are recomputed from their tokens on the workers left, a few times at most.
    const absl::Status& st = out.status();
    const bool lost = absl::IsUnavailable(st) || absl::IsDeadlineExceeded(st) || absl::IsAborted(st);
    for (const sched::ScheduledSeq& ss : step.seqs) {
      Seq& s = *seqs_.at(ss.request_id);
      absl::Status why;
      if (lost && CountKvLoss(s, &why)) {
        sched::StepOutcome o;
        o.request_id = ss.request_id;
        o.lost_kv = true;
        outcomes.push_back(o);
      } else {
        outcomes.push_back({ss.request_id, false, true});
        s.stop_reason = "error";
      }
    }
    failed_steps_ = lost ? failed_steps_ + 1 : 0;
  } else {
    failed_steps_ = 0;
    for (size_t b = 0; b < step.seqs.size(); ++b) {
      const sched::ScheduledSeq& ss = step.seqs[b];
      Seq& s = *seqs_.at(ss.request_id);
      s.kv_loss_open = false;  // its KV is whole again (a loss from now on is a new one)
      s.kv_tokens_kept = attention_->KvTokensHeld(ss.request_id);
      // Before the sampled token joins the stream: what is stored is stream[0, start + n).
      if (!Compresses(s)) attention_->RegisterPrefix(ss.request_id, s.stream);
      if (!ss.wants_logits) {
        outcomes.push_back({ss.request_id, false, false});
        continue;
      }
      SampleResult r;
      if (!out->sampled.empty() && out->sampled[b] >= 0) {
        r.token = out->sampled[b];
        r.logprob = out->sampled_logprob[b];
      } else {
        r = s.sampler->Sample(std::span<const float>(out->row(out->first_row[b]), c.vocab_size));
      }
      s.stream.push_back(r.token);
      const SamplingParams& p = s.req.params;
      const bool eos = !p.ignore_eos && std::find(c.eos_token_ids.begin(), c.eos_token_ids.end(),
                                                  r.token) != c.eos_token_ids.end();
      const bool stop_id = std::find(p.stop_token_ids.begin(), p.stop_token_ids.end(),
                                     r.token) != p.stop_token_ids.end();
      if (eos || stop_id) s.stop_reason = "stop";
      const int32_t generated = static_cast<int32_t>(s.stream.size() - s.req.prompt.size());
      EngineEvent ev;
      ev.id = s.req.id;
      ev.tokens = {r.token};
      ev.samples = {std::move(r)};
      if (!s.stop_reason.empty() || generated >= s.max_new) {
        last[ss.request_id] = std::move(ev);
      } else if (s.req.on_event) {
        s.req.on_event(std::move(ev));
      }
      outcomes.push_back({ss.request_id, true, !s.stop_reason.empty()});
    }
  }
  auto finished = scheduler_->OnStepDone(outcomes);
  KVASIR_CHECK(finished.ok());  // outcomes are built from the step itself
  for (int64_t id : *finished) {
    Seq& s = *seqs_.at(id);
    const std::string reason = s.stop_reason.empty() ? "length" : s.stop_reason;
    auto it = last.find(id);
    Finish(id, reason, reason == "error" ? out.status() : absl::OkStatus(),
           it == last.end() ? nullptr : &it->second);
  }
}

}  // namespace kvasir

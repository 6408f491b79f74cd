#include "scheduler/batch_scheduler.h"

#include <algorithm>
#include <utility>

#include "common/logging.h"

namespace kvasir::sched {

absl::Status ValidateSchedulerConfig(const SchedulerConfig& c) {
  if (c.max_num_seqs < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_num_seqs must be >= 1, got ", c.max_num_seqs));
  }
  if (c.max_num_batched_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_num_batched_tokens must be >= 1, got ", c.max_num_batched_tokens));
  }
  if (c.max_prefill_chunk < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_prefill_chunk must be >= 0 (0: no limit), got ", c.max_prefill_chunk));
  }
  if (c.max_model_len < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_model_len must be >= 0 (0: no limit), got ", c.max_model_len));
  }
  if (c.admission_watermark_blocks < 0) {
    return absl::InvalidArgumentError(absl::StrCat("admission_watermark_blocks must be >= 0, got ",
                                                   c.admission_watermark_blocks));
  }
  return absl::OkStatus();
}

BatchScheduler::BatchScheduler(const SchedulerConfig& config, KvBudget* budget, Clock* clock)
    : config_(config), kv_(budget), clock_(clock) {
  KVASIR_CHECK(ValidateSchedulerConfig(config).ok());
  KVASIR_CHECK(budget != nullptr && clock != nullptr);
}

absl::Status BatchScheduler::Add(int64_t id, int32_t prompt_len, int32_t max_new_tokens,
                                 absl::Time arrival) {
  if (requests_.count(id)) {
    return absl::InvalidArgumentError(absl::StrCat("request ", id, " is already scheduled"));
  }
  if (prompt_len < 1) {
    return absl::InvalidArgumentError(absl::StrCat("request ", id, ": empty prompt"));
  }
  if (max_new_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("request ", id, ": max_new_tokens must be >= 1, got ", max_new_tokens));
  }
  const int64_t total = static_cast<int64_t>(prompt_len) + max_new_tokens;
  if (config_.max_model_len > 0 && total > config_.max_model_len) {
    return absl::InvalidArgumentError(absl::StrCat(
        "request ", id, ": prompt of ", prompt_len, " tokens plus ", max_new_tokens,
        " new tokens exceeds the maximum length of ", config_.max_model_len, " tokens"));
  }
  const int64_t blocks = kv_->BlocksForTokens(total);
  if (blocks > kv_->NumTotalBlocks()) {
    return absl::InvalidArgumentError(
        absl::StrCat("request ", id, ": prompt of ", prompt_len, " tokens plus ", max_new_tokens,
                     " new tokens needs ", blocks, " KV blocks, more than the ",
                     kv_->NumTotalBlocks(), " blocks of the whole cache"));
  }
  Request r;
  r.id = id;
  r.key = Key(arrival, next_order_++, id);
  r.prompt_len = prompt_len;
  r.max_new_tokens = max_new_tokens;
  waiting_.insert(r.key);
  requests_.emplace(id, std::move(r));
  return absl::OkStatus();
}

int32_t BatchScheduler::ChunkCap(int32_t budget) const {
  return config_.max_prefill_chunk > 0 ? std::min(budget, config_.max_prefill_chunk) : budget;
}

void BatchScheduler::AddEntry(Request& r, int32_t n, ScheduledStep& step, int32_t& budget) {
  ScheduledSeq s;
  s.request_id = r.id;
  s.start_pos = r.num_computed;
  s.num_tokens = n;
  s.is_prefill = !r.decoding();
  s.wants_logits = r.num_computed + n == r.known();
  scheduled_[r.id] = step.seqs.size();
  step.seqs.push_back(s);
  budget -= n;
  if (!r.first_scheduled) r.first_scheduled = clock_->Now();
}

void BatchScheduler::Preempt(Request& victim, ScheduledStep& step, int32_t& budget) {
  KVASIR_CHECK(victim.state == RequestState::kRunning);
  auto it = scheduled_.find(victim.id);
  if (it != scheduled_.end()) {
    ScheduledSeq& s = step.seqs[it->second];
    budget += s.num_tokens;
    s.num_tokens = 0;  // dropped when the step is finished
    scheduled_.erase(it);
  }
  Evict(victim);
  step.preempted.push_back(victim.id);
}

void BatchScheduler::Evict(Request& victim) {
  kv_->Free(victim.id);
  running_.erase(victim.key);
  waiting_.insert(victim.key);
  victim.state = RequestState::kWaiting;
  victim.num_computed = 0;
  ++victim.num_preemptions;
  ++num_preemptions_;
}

absl::Status BatchScheduler::PreemptRequest(int64_t id) {
  auto it = requests_.find(id);
  if (it == requests_.end()) return absl::NotFoundError(absl::StrCat("unknown request ", id));
  if (in_flight_) return absl::FailedPreconditionError("a step is in flight");
  if (it->second.state != RequestState::kRunning) {
    return absl::FailedPreconditionError(absl::StrCat("request ", id, " is not running"));
  }
  Evict(it->second);
  return absl::OkStatus();
}

int32_t BatchScheduler::Reserve(Request& r, int32_t want, bool partial, ScheduledStep& step,
                                int32_t& budget) {
  while (true) {
    const int64_t free = kv_->NumFreeBlocks();
    // Allocate can still fail when the pool is shared with other decoders (attention
    // workers): then it is treated as not fitting.
    const bool ask = kv_->shared() || kv_->BlocksNeeded(r.id, want) <= free;
    if (ask && kv_->Allocate(r.id, want).ok()) return want;
    if (partial) {
      // BlocksNeeded grows with the token count: find the most tokens that fit.
      int32_t lo = 0, hi = want - 1;
      while (lo < hi) {
        int32_t mid = lo + (hi - lo + 1) / 2;
        if (kv_->BlocksNeeded(r.id, mid) <= free) {
          lo = mid;
        } else {
          hi = mid - 1;
        }
      }
      if (lo > 0 && lo < want && kv_->Allocate(r.id, lo).ok()) return lo;
    }
    // Youngest running request, if younger than r.
    if (running_.empty()) return 0;
    const Key youngest = *running_.rbegin();
    if (!(r.key < youngest)) return 0;
    Preempt(requests_.at(std::get<2>(youngest)), step, budget);
  }
}

ScheduledStep BatchScheduler::Schedule() {
  KVASIR_CHECK(!in_flight_);
  ScheduledStep step;
  scheduled_.clear();
  int32_t budget = config_.max_num_batched_tokens;

  // A snapshot, since preemption moves requests out of running_; preempted ones are skipped.
  const std::vector<Key> running(running_.begin(), running_.end());

  // Decodes first: one token each, oldest first.
  for (const Key& key : running) {
    if (budget == 0) break;
    Request& r = requests_.at(std::get<2>(key));
    if (r.state != RequestState::kRunning || !r.decoding()) continue;
    if (Reserve(r, 1, /*partial=*/false, step, budget) == 1) AddEntry(r, 1, step, budget);
  }
  // Then prefill chunks of running requests (started prefills and recomputes), oldest first.
  for (const Key& key : running) {
    if (budget == 0) break;
    Request& r = requests_.at(std::get<2>(key));
    if (r.state != RequestState::kRunning || r.decoding() || scheduled_.count(r.id)) continue;
    const int32_t want = std::min(r.known() - r.num_computed, ChunkCap(budget));
    const int32_t n = Reserve(r, want, /*partial=*/true, step, budget);
    if (n > 0) AddEntry(r, n, step, budget);
  }
  // Then admit waiting requests in priority order. The head blocks everyone behind it, and a
  // step that had to preempt admits nobody (the preempted request would only thrash).
  while (step.preempted.empty() && budget > 0 && !waiting_.empty() &&
         static_cast<int32_t>(running_.size()) < config_.max_num_seqs) {
    Request& r = requests_.at(std::get<2>(*waiting_.begin()));
    // A cached prefix of its stream is stored already (a recompute after preemption may find
    // its own earlier blocks).
    if (r.num_computed == 0) r.num_computed = kv_->AdoptCachedPrefix(r.id);
    const int32_t want = std::min(r.known() - r.num_computed, ChunkCap(budget));
    // The watermark is waived when nothing runs, or a request larger than the pool minus the
    // watermark would never start.
    const int64_t keep = running_.empty() ? 0 : config_.admission_watermark_blocks;
    if ((!kv_->shared() && kv_->BlocksNeeded(r.id, want) + keep > kv_->NumFreeBlocks()) ||
        !kv_->Allocate(r.id, want).ok()) {
      if (r.num_computed > 0) {  // not now: the cached blocks go back (looked up again later)
        kv_->Free(r.id);
        r.num_computed = 0;
      }
      break;
    }
    waiting_.erase(waiting_.begin());
    running_.insert(r.key);
    r.state = RequestState::kRunning;
    AddEntry(r, want, step, budget);
  }

  // Drop the entries of requests preempted after they were scheduled.
  std::erase_if(step.seqs, [](const ScheduledSeq& s) { return s.num_tokens == 0; });
  for (const ScheduledSeq& s : step.seqs) step.num_batched_tokens += s.num_tokens;
  KVASIR_DCHECK(step.num_batched_tokens <= config_.max_num_batched_tokens);
  scheduled_.clear();
  in_flight_ = !step.seqs.empty();
  in_flight_seqs_ = step.seqs;
  aborted_in_flight_.clear();
  return step;
}

absl::StatusOr<std::vector<int64_t>> BatchScheduler::OnStepDone(
    const std::vector<StepOutcome>& outcomes) {
  if (!in_flight_) {
    return absl::FailedPreconditionError("OnStepDone without a scheduled step");
  }
  std::unordered_map<int64_t, const ScheduledSeq*> by_id;
  for (const ScheduledSeq& s : in_flight_seqs_) by_id[s.request_id] = &s;
  std::unordered_map<int64_t, const StepOutcome*> outcome_of;
  for (const StepOutcome& o : outcomes) {
    if (aborted_in_flight_.count(o.request_id)) continue;
    auto it = by_id.find(o.request_id);
    if (it == by_id.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("outcome for request ", o.request_id, ", which was not in the step"));
    }
    if (!outcome_of.emplace(o.request_id, &o).second) {
      return absl::InvalidArgumentError(absl::StrCat("two outcomes for request ", o.request_id));
    }
    if (o.lost_kv) {
      if (o.produced_token || o.finished) {
        return absl::InvalidArgumentError(absl::StrCat(
            "request ", o.request_id, " lost its KV but produced a token or finished"));
      }
      continue;
    }
    if (o.produced_token && !it->second->wants_logits) {
      return absl::InvalidArgumentError(absl::StrCat(
          "request ", o.request_id, " produced a token from a prefill chunk without logits"));
    }
    if (it->second->wants_logits && !o.produced_token && !o.finished) {
      return absl::InvalidArgumentError(absl::StrCat(
          "request ", o.request_id, " had logits but neither produced a token nor finished"));
    }
  }
  for (const ScheduledSeq& s : in_flight_seqs_) {
    if (!aborted_in_flight_.count(s.request_id) && !outcome_of.count(s.request_id)) {
      return absl::InvalidArgumentError(
          absl::StrCat("no outcome for request ", s.request_id, " of the step"));
    }
  }

  std::vector<int64_t> finished;
  for (const ScheduledSeq& s : in_flight_seqs_) {
    auto it = outcome_of.find(s.request_id);
    if (it == outcome_of.end()) continue;
    Request& r = requests_.at(s.request_id);
    if (it->second->lost_kv) {
      Evict(r);
      continue;
    }
    r.num_computed += s.num_tokens;
    if (it->second->produced_token) ++r.num_generated;
    if (it->second->finished || r.num_generated >= r.max_new_tokens) {
      finished.push_back(r.id);
      Finish(r);
    }
  }
  in_flight_ = false;
  in_flight_seqs_.clear();
  aborted_in_flight_.clear();
  return finished;
}

void BatchScheduler::Finish(Request& r) {
  kv_->Free(r.id);
  if (r.state == RequestState::kRunning) {
    running_.erase(r.key);
  } else {
    waiting_.erase(r.key);
  }
  ++num_finished_;
  requests_.erase(r.id);
}

absl::Status BatchScheduler::Abort(int64_t id) {
  auto it = requests_.find(id);
  if (it == requests_.end()) return absl::NotFoundError(absl::StrCat("unknown request ", id));
  Request& r = it->second;
  kv_->Free(id);
  if (r.state == RequestState::kRunning) {
    running_.erase(r.key);
  } else {
    waiting_.erase(r.key);
  }
  if (in_flight_) aborted_in_flight_.insert(id);
  ++num_aborted_;
  requests_.erase(it);
  return absl::OkStatus();
}

std::optional<RequestInfo> BatchScheduler::Info(int64_t id) const {
  auto it = requests_.find(id);
  if (it == requests_.end()) return std::nullopt;
  const Request& r = it->second;
  RequestInfo info;
  info.state = r.state;
  info.prompt_len = r.prompt_len;
  info.max_new_tokens = r.max_new_tokens;
  info.num_generated = r.num_generated;
  info.num_computed = r.num_computed;
  info.num_preemptions = r.num_preemptions;
  info.arrival = std::get<0>(r.key);
  info.first_scheduled = r.first_scheduled;
  return info;
}

absl::Duration BatchScheduler::head_of_line_wait() const {
  if (waiting_.empty()) return absl::ZeroDuration();
  return std::max(absl::ZeroDuration(), clock_->Now() - std::get<0>(*waiting_.begin()));
}

std::vector<int64_t> BatchScheduler::running_ids() const {
  std::vector<int64_t> ids;
  for (const Key& k : running_) ids.push_back(std::get<2>(k));
  return ids;
}

std::vector<int64_t> BatchScheduler::waiting_ids() const {
  std::vector<int64_t> ids;
  for (const Key& k : waiting_) ids.push_back(std::get<2>(k));
  return ids;
}

}  // namespace kvasir::sched

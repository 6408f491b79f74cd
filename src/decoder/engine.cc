#include "decoder/engine.h"

#include <algorithm>
#include <chrono>

#include "common/logging.h"

namespace kvasir {

Engine::Engine(ModelRunner* runner, EngineConfig config)
    : runner_(runner), attention_(runner->attention()), config_(config) {}

Engine::~Engine() { Stop(); }

void Engine::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!thread_.joinable()) thread_ = std::thread([this] { Loop(); });
}

void Engine::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

absl::Status Engine::Submit(EngineRequest request) {
  const ModelConfig& c = runner_->config();
  const int64_t plen = static_cast<int64_t>(request.prompt.size());
  if (plen == 0) return absl::InvalidArgumentError("empty prompt");
  if (plen >= c.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt of ", plen, " tokens does not fit the context of ", c.max_position_embeddings,
        " tokens"));
  }
  const int64_t total = std::min<int64_t>(plen + request.params.max_tokens, c.max_position_embeddings);
  if (absl::Status fits = attention_->CheckFits(total); !fits.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("prompt + max_tokens (", total,
                                                   " tokens) does not fit: ", fits.message(),
                                                   "; lower max_tokens"));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return absl::UnavailableError("engine is shutting down");
    if (static_cast<int64_t>(incoming_.size()) + stats_.waiting >= config_.max_waiting) {
      return absl::ResourceExhaustedError(
          absl::StrCat("request queue is full (", config_.max_waiting, " waiting)"));
    }
    incoming_.push_back(std::move(request));
  }
  cv_.notify_one();
  return absl::OkStatus();
}

void Engine::Cancel(uint64_t id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancels_.push_back(id);
  }
  cv_.notify_one();
}

EngineStats Engine::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void Engine::Finish(Seq& s, const std::string& reason, absl::Status error, EngineEvent* last) {
  if (s.seq_id != 0) {
    attention_->Release(s.seq_id);
    s.seq_id = 0;
  }
  EngineEvent ev;
  if (last) ev = std::move(*last);  // the final token and the finish travel together
  ev.id = s.req.id;
  ev.finished = true;
  ev.finish_reason = reason;
  ev.error = std::move(error);
  if (s.req.on_event) s.req.on_event(std::move(ev));
}

void Engine::Loop() {
  const ModelConfig& c = runner_->config();
  while (true) {
    std::deque<EngineRequest> incoming;
    std::vector<uint64_t> cancels;
    bool stopping;
    {
      std::unique_lock<std::mutex> lock(mu_);
      auto news = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stop_ || !incoming_.empty() || !cancels_.empty();
      };
      if (admission_blocked_) {
        // Nothing runs here and the KV the head needs is held by other decoders: poll.
        cv_.wait_for(lock, std::chrono::milliseconds(5), news);
      } else {
        // waiting_ too: when the last running sequence finishes, the head of the queue must be
        // admitted without waiting for another arrival.
        cv_.wait(lock, [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return news() || !running_.empty() || !waiting_.empty();
        });
      }
      incoming.swap(incoming_);
      cancels.swap(cancels_);
      stopping = stop_;
    }
    for (EngineRequest& r : incoming) {
      auto s = std::make_unique<Seq>();
      s->req = std::move(r);
      waiting_.push_back(std::move(s));
    }
    auto cancel_in = [&](auto& list) {
      for (auto it = list.begin(); it != list.end();) {
        if (stopping || std::find(cancels.begin(), cancels.end(), (*it)->req.id) != cancels.end()) {
          Finish(**it, "abort");
          it = list.erase(it);
        } else {
          ++it;
        }
      }
    };
    if (stopping || !cancels.empty()) {
      cancel_in(waiting_);
      cancel_in(running_);
    }
    if (stopping) break;

    // Admission: FCFS; the head of the queue blocks younger requests (no starvation).
    while (!waiting_.empty() && static_cast<int32_t>(running_.size()) < config_.max_num_seqs) {
      Seq& s = *waiting_.front();
      const int64_t plen = static_cast<int64_t>(s.req.prompt.size());
      const int64_t need =
          std::min<int64_t>(plen + s.req.params.max_tokens, c.max_position_embeddings);
      while (attention_->Contains(next_seq_id_)) ++next_seq_id_;  // the cache may be shared
      if (absl::Status st = attention_->Admit(next_seq_id_, need); !st.ok()) {
        if (absl::IsResourceExhausted(st)) break;  // waits for running sequences to finish
        Finish(s, "error", st);
        waiting_.pop_front();
        continue;
      }
      s.seq_id = next_seq_id_++;
      s.sampler = std::make_unique<Sampler>(s.req.params, s.req.prompt);
      running_.push_back(std::move(waiting_.front()));
      waiting_.pop_front();
    }

    // One step: decodes first, then prefill chunks under the token budget.
    std::vector<SequenceInput> batch;
    std::vector<Seq*> batch_seq;
    int32_t budget = config_.max_num_batched_tokens;
    for (auto& sp : running_) {
      Seq& s = *sp;
      if (s.pending < 0 || budget <= 0) continue;
      batch.push_back({s.seq_id, {s.pending}, s.pos, true, false});
      batch_seq.push_back(&s);
      --budget;
    }
    for (auto& sp : running_) {
      Seq& s = *sp;
      const int32_t plen = static_cast<int32_t>(s.req.prompt.size());
      if (s.prefilled >= plen || budget <= 0) continue;
      const int32_t n = std::min(budget, plen - s.prefilled);
      SequenceInput in;
      in.seq_id = s.seq_id;
      in.tokens.assign(s.req.prompt.begin() + s.prefilled, s.req.prompt.begin() + s.prefilled + n);
      in.start_pos = s.pos;
      in.want_logits = s.prefilled + n == plen;
      batch.push_back(std::move(in));
      batch_seq.push_back(&s);
      budget -= n;
    }
    if (!batch.empty()) {
      auto out = runner_->Forward(batch);
      if (!out.ok()) {
        SPDLOG_ERROR("forward step failed: {}", out.status().ToString());
        for (Seq* s : batch_seq) s->pending = -2;  // marks for removal below
        for (auto it = running_.begin(); it != running_.end();) {
          if ((*it)->pending == -2) {
            Finish(**it, "error", out.status());
            it = running_.erase(it);
          } else {
            ++it;
          }
        }
      } else {
        for (size_t b = 0; b < batch.size(); ++b) {
          Seq& s = *batch_seq[b];
          const int32_t n = static_cast<int32_t>(batch[b].tokens.size());
          s.pos += n;
          if (s.pending >= 0) {
            s.pending = -1;
          } else {
            s.prefilled += n;
          }
          if (!batch[b].want_logits) continue;
          SampleResult r = s.sampler->Sample(
              std::span<const float>(out->row(out->first_row[b]), c.vocab_size));
          ++s.generated;
          const SamplingParams& p = s.req.params;
          bool eos = !p.ignore_eos && std::find(c.eos_token_ids.begin(), c.eos_token_ids.end(),
                                                r.token) != c.eos_token_ids.end();
          bool stop_id = std::find(p.stop_token_ids.begin(), p.stop_token_ids.end(), r.token) !=
                         p.stop_token_ids.end();
          std::string reason;
          if (eos || stop_id) {
            reason = "stop";
          } else if (s.generated >= p.max_tokens || s.pos >= c.max_position_embeddings) {
            reason = "length";
          } else {
            s.pending = r.token;
          }
          EngineEvent ev;
          ev.id = s.req.id;
          ev.tokens = {r.token};
          ev.samples = {std::move(r)};
          if (reason.empty()) {
            if (s.req.on_event) s.req.on_event(std::move(ev));
          } else {
            s.pending = -3;  // finished; removed below
            Finish(s, reason, absl::OkStatus(), &ev);
          }
        }
        running_.erase(std::remove_if(running_.begin(), running_.end(),
                                      [](const auto& s) { return s->pending == -3; }),
                       running_.end());
      }
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      stats_.running = static_cast<int64_t>(running_.size());
      stats_.waiting = static_cast<int64_t>(waiting_.size());
      const KvUsage u = attention_->Usage();
      stats_.kv_blocks_total = u.blocks_total;
      stats_.kv_blocks_used = u.blocks_used;
      if (!batch.empty()) ++stats_.steps;
    }
    // Nothing runs and the head cannot be admitted: the KV is held by other decoders sharing
    // the attention workers (Submit checked that it fits an empty pool).
    admission_blocked_ = batch.empty() && !waiting_.empty() && running_.empty();
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.running = stats_.waiting = 0;
    stats_.kv_blocks_used = attention_->Usage().blocks_used;
  }
}

}  // namespace kvasir

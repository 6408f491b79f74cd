#include "router/completion_service.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace kvasir {

using api::ApiError;
using api::BadRequest;
using Clock = std::chrono::steady_clock;

CompletionStream::~CompletionStream() { Cancel(); }

void CompletionStream::OnEvent(EngineEvent ev) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (ev.finished) {
      engine_done_ = true;
      kv_tokens_kept_ = ev.kv_tokens_kept;
    }
    events_.push_back(std::move(ev));
  }
  cv_.notify_one();
}

void CompletionStream::Cancel() {
  if (engine_ == nullptr) return;  // never submitted
  bool running;
  int32_t tokens;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) return;  // completed normally
    finished_ = true;
    running = !engine_done_;
    tokens = completion_tokens_;
  }
  if (running) engine_->Cancel(id_);
  const double e2e = std::chrono::duration<double>(Clock::now() - start_).count();
  const double ttft = tokens ? std::chrono::duration<double>(first_token_ - start_).count() : 0;
  metrics_->RequestFinished("abort", prompt_tokens_, tokens, ttft, e2e,
                            tokens > 1 ? (e2e - ttft) / (tokens - 1) : 0);
}

api::Usage CompletionStream::usage() const {
  std::lock_guard<std::mutex> lock(mu_);
  return {prompt_tokens_, completion_tokens_, kv_tokens_kept_};
}

bool CompletionStream::Next(StreamDelta* out, std::chrono::milliseconds timeout) {
  *out = StreamDelta();
  std::unique_lock<std::mutex> lock(mu_);
  if (finished_) {
    out->done = true;
    return true;
  }
  if (!cv_.wait_for(lock, timeout, [&] { return !events_.empty(); })) return false;
  // Drain everything available into one delta.
  while (!events_.empty() && !out->done) {
    EngineEvent ev = std::move(events_.front());
    events_.pop_front();
    for (size_t i = 0; i < ev.tokens.size(); ++i) {
      if (completion_tokens_ == 0) first_token_ = Clock::now();
      ++completion_tokens_;
      const int32_t tok = ev.tokens[i];
      if (want_logprobs_ && i < ev.samples.size()) {
        // Tokens named by their text in place (not their vocab piece "▁was"), so that the
        // tokens join to the completion's text.
        api::TokenLogprobs lp;
        lp.token = TokenText(*tokenizer_, tok, lp_ctx_);
        lp.logprob = ev.samples[i].logprob;
        for (const TokenLogprob& t : ev.samples[i].top) {
          lp.top.push_back({TokenText(*tokenizer_, t.token, lp_ctx_), t.logprob});
        }
        out->logprobs.push_back(std::move(lp));
      }
      AdvanceDecodeContext(*tokenizer_, tok, /*skip_special=*/true, &lp_ctx_);
      if (!ev.finished || ev.finish_reason != "stop") {
        // A stop token is generated but not shown, as OpenAI does.
        auto r = text_->Push(tok);
        out->text += r.text;
        if (r.stopped) {
          out->done = true;
          out->finish_reason = "stop";
          break;
        }
      } else {
        // Finished by EOS / stop id in the same event: the token itself is not shown.
      }
    }
    if (!out->done && ev.finished) {
      out->done = true;
      out->finish_reason = ev.finish_reason;
      if (ev.finish_reason == "error") {
        ApiError e;
        if (absl::IsUnavailable(ev.error) || absl::IsDeadlineExceeded(ev.error) ||
            absl::IsAborted(ev.error)) {  // a worker died, froze or is unreachable
          e.http_status = 503;
          e.type = "service_unavailable";
        } else {
          e.http_status = 500;
          e.type = "internal_error";
        }
        e.message = std::string(ev.error.message());
        out->error = e;
      } else if (ev.finish_reason == "abort") {
        // Not the client's doing (its cancellation ends the stream before any event): the
        // server is shutting down or lost the decoder. "abort" is no OpenAI finish_reason, so
        // the client gets an error instead of a truncated "success".
        ApiError e;
        e.http_status = 503;
        e.type = "service_unavailable";
        e.message = "the request was aborted by the server (shutting down, or its decoder went away)";
        out->error = e;
      }
    }
  }
  if (out->done) {
    out->text += text_->Finish();  // "" after a stop string
    finished_ = true;
    const bool engine_running = !engine_done_;
    lock.unlock();
    if (engine_running) engine_->Cancel(id_);  // stop string matched: free the KV now
    const double e2e = std::chrono::duration<double>(Clock::now() - start_).count();
    const double ttft = completion_tokens_ ? std::chrono::duration<double>(first_token_ - start_).count() : 0;
    const double tpot = completion_tokens_ > 1 ? (e2e - ttft) / (completion_tokens_ - 1) : 0;
    metrics_->RequestFinished(out->finish_reason, prompt_tokens_, completion_tokens_, ttft, e2e, tpot);
  }
  return true;
}

CompletionService::CompletionService(EngineHandle* engine, const Tokenizer* tokenizer,
                                     ServiceConfig config)
    : engine_(engine), tokenizer_(tokenizer), config_(std::move(config)) {
  int64_t longest = 1;
  for (int32_t id = 0; id < tokenizer_->vocab_size(); ++id) {
    longest = std::max<int64_t>(longest, static_cast<int64_t>(tokenizer_->IdToPiece(id).size()));
  }
  max_text_bytes_per_token_ = 2 * longest;
}

std::variant<std::shared_ptr<CompletionStream>, ApiError> CompletionService::Start(
    const api::CompletionRequest& req) {
  const ModelConfig& mc = engine_->model_config();
  auto reject = [&](ApiError e) {
    metrics_.RequestRejected();
    return e;
  };
  if (!req.model.empty() && req.model != config_.model_name) {
    ApiError e;
    e.http_status = 404;
    e.type = "NotFoundError";
    e.code = "model_not_found";
    e.param = "model";
    e.message = absl::StrCat("The model `", req.model, "` does not exist. Served: ", config_.model_name);
    return reject(e);
  }
  const int64_t ctx = mc.max_position_embeddings;
  auto too_long = [&](size_t text_bytes, const char* param) -> std::optional<ApiError> {
    if (static_cast<int64_t>(text_bytes) <= ctx * max_text_bytes_per_token_) return std::nullopt;
    return BadRequest(absl::StrCat("This model's maximum context length is ", ctx,
                                   " tokens; a prompt of ", text_bytes,
                                   " bytes has more tokens than that. Please reduce the prompt."),
                      param);
  };
  auto stream = std::make_shared<CompletionStream>();
  std::vector<int32_t> ids;
  if (req.endpoint == api::Endpoint::kChatCompletions) {
    size_t bytes = 0;
    for (const api::ChatMessage& m : req.messages) bytes += m.content.size();
    if (auto e = too_long(bytes, "messages")) return reject(*e);
    api::ChatPrompt cp = api::ApplyChatTemplate(config_.chat_format, req.messages, req.add_generation_prompt);
    auto enc = tokenizer_->Encode(cp.text, cp.add_bos);
    if (!enc.ok()) return reject(BadRequest(std::string(enc.status().message()), "messages"));
    ids = std::move(*enc);
  } else if (req.prompt_ids) {
    ids = *req.prompt_ids;
    for (int32_t t : ids) {
      if (t >= mc.vocab_size) {
        return reject(BadRequest(absl::StrCat("prompt token id ", t, " is outside the vocabulary of ",
                                              mc.vocab_size), "prompt"));
      }
    }
    if (req.echo) stream->prompt_text_ = tokenizer_->Decode(ids);
  } else {
    if (auto e = too_long(req.prompt_text->size(), "prompt")) return reject(*e);
    auto enc = tokenizer_->Encode(*req.prompt_text, true);
    if (!enc.ok()) return reject(BadRequest(std::string(enc.status().message()), "prompt"));
    ids = std::move(*enc);
    if (req.echo) stream->prompt_text_ = *req.prompt_text;
  }
  const int64_t plen = static_cast<int64_t>(ids.size());
  SamplingParams params = req.params;
  if (plen >= ctx || (req.max_tokens_given && plen + params.max_tokens > ctx)) {
    ApiError e = BadRequest(absl::StrCat(
        "This model's maximum context length is ", ctx, " tokens. However, you requested ",
        plen + (req.max_tokens_given ? params.max_tokens : 0), " tokens (", plen,
        " in the prompt, ", req.max_tokens_given ? params.max_tokens : 0,
        " for the completion). Please reduce the prompt or max_tokens."), plen >= ctx ? "prompt" : "max_tokens");
    return reject(e);
  }
  if (!req.max_tokens_given) params.max_tokens = static_cast<int32_t>(ctx - plen);
  if (absl::Status s = ValidateSamplingParams(params, mc.vocab_size); !s.ok()) {
    return reject(BadRequest(std::string(s.message())));
  }
  stream->engine_ = engine_;
  stream->tokenizer_ = tokenizer_;
  stream->metrics_ = &metrics_;
  stream->id_ = next_id_.fetch_add(1);
  stream->prompt_tokens_ = static_cast<int32_t>(plen);
  stream->want_logprobs_ = req.want_logprobs;
  stream->text_ = std::make_unique<GeneratedText>(*tokenizer_, params.stop, ids);
  for (int32_t id : ids) AdvanceDecodeContext(*tokenizer_, id, /*skip_special=*/true, &stream->lp_ctx_);
  stream->start_ = Clock::now();
  EngineRequest er;
  er.id = stream->id_;
  er.prompt = std::move(ids);
  er.params = params;
  // The request's kv_policy / kv_budget over the server's defaults (validated at start-up, so
  // a bad result comes from the request's budget).
  auto kv_policy = ResolveKvPolicy(config_.default_kv_policy, req.kv_policy, req.kv_budget);
  if (!kv_policy.ok()) {
    return reject(BadRequest(std::string(kv_policy.status().message()),
                             req.kv_budget ? "kv_budget" : "kv_policy"));
  }
  er.kv_policy = *kv_policy;
  std::weak_ptr<CompletionStream> weak = stream;
  er.on_event = [weak](EngineEvent ev) {
    if (auto s = weak.lock()) s->OnEvent(std::move(ev));
  };
  if (absl::Status s = engine_->Submit(std::move(er)); !s.ok()) {
    ApiError e;
    e.message = std::string(s.message());
    if (s.code() == absl::StatusCode::kResourceExhausted) {
      e.http_status = 429;
      e.type = "rate_limit_error";
    } else if (s.code() == absl::StatusCode::kUnavailable) {
      e.http_status = 503;
      e.type = "service_unavailable";
    } else {
      e.http_status = 400;
    }
    stream->engine_ = nullptr;  // never submitted
    return reject(e);
  }
  return stream;
}

std::string CompletionService::RenderMetrics() {
  EngineStats s = engine_->stats();
  Gauges g{s.running, s.waiting, s.kv_blocks_total, s.kv_blocks_used, s.preemptions,
           s.kv_evicted_blocks};
  g.prefix_queries_tokens = s.prefix_queries_tokens;
  g.prefix_hit_tokens = s.prefix_hit_tokens;
  std::string out = metrics_.Render(config_.model_name, g);
  if (config_.extra_metrics) out += config_.extra_metrics();
  return out;
}

}  // namespace kvasir

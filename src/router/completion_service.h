// The router's request path for the embedded mode: tokenize (chat template for chat), validate
// against the model (context, vocabulary), submit to the decoder engine, and turn its token
// events into UTF-8-safe text deltas with stop strings applied. Plain C++ types in and out;
// HTTP and JSON live in src/api.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "api/chat_template.h"
#include "api/openai_types.h"
#include "decoder/engine.h"
#include "decoder/generated_text.h"
#include "model/tokenizer/tokenizer.h"
#include "router/metrics.h"

namespace kvasir {

// What the HTTP layer gets from Next(): a text delta, possibly the end.
struct StreamDelta {
  std::string text;
  std::vector<api::TokenLogprobs> logprobs;  // for the tokens behind this delta (when asked)
  bool done = false;
  std::string finish_reason;  // set when done
  std::optional<api::ApiError> error;
};

class CompletionStream {
 public:
  ~CompletionStream();
  // Blocks up to `timeout` for the next delta; false on timeout (check the client, call again).
  bool Next(StreamDelta* out, std::chrono::milliseconds timeout);
  // The client went away: stop generating and free the KV blocks.
  void Cancel();
  api::Usage usage() const;
  const std::string& prompt_text() const { return prompt_text_; }

 private:
  friend class CompletionService;
  void OnEvent(EngineEvent ev);

  EngineHandle* engine_ = nullptr;
  const Tokenizer* tokenizer_ = nullptr;
  DecodeContext lp_ctx_;  // after the prompt and the tokens so far: names logprob tokens
  RouterMetrics* metrics_ = nullptr;
  uint64_t id_ = 0;
  int32_t prompt_tokens_ = 0;
  bool want_logprobs_ = false;
  std::string prompt_text_;
  std::unique_ptr<GeneratedText> text_;  // detokenizer + stop strings
  std::chrono::steady_clock::time_point start_, first_token_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<EngineEvent> events_;
  int32_t completion_tokens_ = 0;
  int64_t kv_tokens_kept_ = -1;
  bool finished_ = false;  // delivered done to the caller
  bool engine_done_ = false;
};

struct ServiceConfig {
  std::string model_name;
  api::ChatFormat chat_format = api::ChatFormat::kPlain;
  // More Prometheus text for /metrics (the KV manager's), appended as is.
  std::function<std::string()> extra_metrics;
  // Capacity lost but still serving ("1 of 2 attention workers down"); "" when whole. Empty
  // function: always whole.
  std::function<std::string()> degraded;
  // False while no KV pool (attention worker) is up: /health answers 503. Empty: always up.
  std::function<bool()> kv_up;
  // kv_policy / kv_budget of requests that give none (--kv-policy, --kv-budget); unset: full.
  std::optional<KvPolicy> default_kv_policy;
};

class CompletionService {
 public:
  CompletionService(EngineHandle* engine, const Tokenizer* tokenizer, ServiceConfig config);

  std::variant<std::shared_ptr<CompletionStream>, api::ApiError> Start(
      const api::CompletionRequest& request);

  const std::string& model_name() const { return config_.model_name; }
  // What /health says beyond serving or not: "" when nothing is lost.
  std::string degraded() const { return config_.degraded ? config_.degraded() : std::string(); }
  int32_t max_model_len() const { return engine_->model_config().max_position_embeddings; }
  RouterMetrics& metrics() { return metrics_; }
  bool healthy() const { return engine_->healthy() && (!config_.kv_up || config_.kv_up()); }
  std::string RenderMetrics();

 private:
  EngineHandle* engine_;
  const Tokenizer* tokenizer_;
  ServiceConfig config_;
  // An upper bound on the text bytes one token can stand for (twice the longest vocab piece,
  // for normalizers): a text longer than the context times this has too many tokens for sure,
  // and is refused before spending time on tokenizing it.
  int64_t max_text_bytes_per_token_ = 0;
  RouterMetrics metrics_;
  std::atomic<uint64_t> next_id_{1};
};

}  // namespace kvasir

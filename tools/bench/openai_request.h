// OpenAI-compatible streaming requests: the JSON body `vllm bench serve` sends for the
// `openai` (/v1/completions) and `openai-chat` (/v1/chat/completions) backends, and the
// accumulator that turns the streamed SSE payloads into a RequestOutput.
#pragma once

#include <map>
#include <string>
#include <string_view>

#include "nlohmann/json.hpp"
#include "tools/bench/metrics.h"

namespace kvasir::bench {

enum class ApiKind { kCompletions, kChatCompletions };

struct RequestParams {
  std::string model;
  std::string prompt;
  int max_tokens = 0;
  bool ignore_eos = false;
  nlohmann::json extra_body = nlohmann::json::object();  // sampling params, --extra-body
};

// {"model", "prompt"|"messages", "max_tokens"[, "max_completion_tokens"], "stream": true,
//  "stream_options": {"include_usage": true}[, "ignore_eos": true], ...extra_body}
std::string BuildRequestBody(ApiKind kind, const RequestParams& params);

// Consumes one request's stream. Timestamps are seconds on the same clock as start_time.
class StreamAccumulator {
 public:
  StreamAccumulator(ApiKind kind, double start_time, int prompt_len);

  // One SSE data payload received at `now`. Returns false if the payload is malformed; the
  // request then counts as failed (and the caller should abort the transfer).
  bool OnMessage(std::string_view payload, double now);

  // Completes the output. `http_status` 200 and `transport_error` empty mean the stream
  // ended normally; `error_body` is the (truncated) body of a non-200 reply.
  RequestOutput Finish(long http_status, const std::string& transport_error,
                       const std::string& error_body);

  bool failed() const { return !error_.empty(); }
  bool done() const { return done_; }

 private:
  ApiKind kind_;
  RequestOutput out_;
  double last_ = 0;
  bool first_ = false;
  bool done_ = false;
  std::string error_;
};

}  // namespace kvasir::bench

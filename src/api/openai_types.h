// Native request/response types of the OpenAI-compatible API. JSON never leaves src/api/:
// requests are parsed into these structs as early as possible, responses are written from them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "kvcache/eviction/kv_policy.h"
#include "model/sampling/sampling_params.h"

namespace kvasir::api {

enum class Endpoint { kCompletions, kChatCompletions };

struct ChatMessage {
  std::string role;     // system | user | assistant | tool | developer
  std::string content;  // text parts concatenated
};

struct CompletionRequest {
  Endpoint endpoint = Endpoint::kCompletions;
  std::string model;
  // /v1/completions: the prompt as text, or as token ids (exactly one of the two is set).
  std::optional<std::string> prompt_text;
  std::optional<std::vector<int32_t>> prompt_ids;
  // /v1/chat/completions
  std::vector<ChatMessage> messages;
  bool add_generation_prompt = true;

  SamplingParams params;       // max_tokens defaults to the remaining context when absent
  bool max_tokens_given = false;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool echo = false;           // completions: prepend the prompt to the output
  // Token logprobs asked for: completions `logprobs` given (0 included: the chosen tokens'
  // only), chat `logprobs: true`. params.logprobs counts the alternatives.
  bool want_logprobs = false;
  std::string user;
  // Kvasir's extra fields: head-aware KV eviction after the prompt (kvcache/eviction).
  // `kv_policy`: full | taskkv | streaming | snapkv | adakv; `kv_budget`: a fraction of the
  // prompt in (0, 1] or a token count. Unset: the server's defaults (--kv-policy, --kv-budget).
  std::optional<KvPolicyKind> kv_policy;
  std::optional<double> kv_budget;
};

// An error in OpenAI's shape: {"error": {"message", "type", "param", "code"}}.
struct ApiError {
  int http_status = 400;
  std::string type = "invalid_request_error";
  std::string message;
  std::string param;  // "" -> null
  std::string code;   // "" -> null
};

ApiError BadRequest(std::string message, std::string param = "");

// The kv_policy / kv_budget fields into r (shared by the HTTP and gRPC front ends); an error
// names the field.
std::optional<ApiError> SetKvPolicyField(const std::string& name, CompletionRequest* r);
std::optional<ApiError> SetKvBudgetField(double budget, CompletionRequest* r);

// Parses and validates a request body (everything that can be checked without the model).
std::variant<CompletionRequest, ApiError> ParseCompletionRequest(std::string_view body,
                                                                  Endpoint endpoint);

std::string ErrorJson(const ApiError& e);

struct Usage {
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
  // KV tokens the request kept per (layer, KV head) at its end; -1: unknown (not reported).
  int64_t kv_tokens_kept = -1;
};

struct TopLogprob {
  std::string token;
  float logprob;
};
struct TokenLogprobs {
  std::string token;
  float logprob;
  std::vector<TopLogprob> top;
};

// Identifies the server's build in every response, as OpenAI's system_fingerprint does.
inline constexpr char kSystemFingerprint[] = "fp_kvasir_0.1.0";

// Whole (non-streaming) response bodies. `logprobs` (null: not asked) covers the completion's
// tokens; completions' text_offset counts from `text_offset_base` (the echoed prompt's length).
std::string CompletionResponseJson(const std::string& id, int64_t created, const std::string& model,
                                   const std::string& text, const std::string& finish_reason,
                                   const Usage& usage, const std::vector<TokenLogprobs>* logprobs,
                                   int64_t text_offset_base = 0);
std::string ChatResponseJson(const std::string& id, int64_t created, const std::string& model,
                             const std::string& text, const std::string& finish_reason,
                             const Usage& usage,
                             const std::vector<TokenLogprobs>* logprobs = nullptr);

// One server-sent event "data: {...}\n\n" of a stream. finish_reason "" -> null.
// For chat, `first` adds the assistant role to the delta.
// `logprobs` (null or empty: none) are the tokens behind this chunk; completions' text_offset
// of the first is `text_offset`.
std::string CompletionChunkEvent(const std::string& id, int64_t created, const std::string& model,
                                 const std::string& text, const std::string& finish_reason,
                                 const std::vector<TokenLogprobs>* logprobs = nullptr,
                                 int64_t text_offset = 0);
std::string ChatChunkEvent(const std::string& id, int64_t created, const std::string& model,
                           const std::string& text, const std::string& finish_reason, bool first,
                           const std::vector<TokenLogprobs>* logprobs = nullptr);
// The final usage chunk (choices: []), sent when stream_options.include_usage is true.
std::string UsageChunkEvent(Endpoint endpoint, const std::string& id, int64_t created,
                            const std::string& model, const Usage& usage);
inline constexpr char kDoneEvent[] = "data: [DONE]\n\n";

// GET /health with something to say: {"status": status, "detail": detail}.
std::string HealthJson(const std::string& status, const std::string& detail);

// GET /v1/models
std::string ModelsJson(const std::vector<std::string>& model_ids, int64_t created,
                       int32_t max_model_len);

}  // namespace kvasir::api

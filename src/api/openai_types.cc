#include "api/openai_types.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace kvasir::api {

using nlohmann::json;

ApiError BadRequest(std::string message, std::string param) {
  ApiError e;
  e.http_status = 400;
  e.message = std::move(message);
  e.param = std::move(param);
  return e;
}

namespace {
// Every body is dumped with invalid UTF-8 replaced (U+FFFD): error messages quote client input
// (a path, a role, a stop string), and nlohmann throws on invalid UTF-8 by default.
std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }
std::string Event(const json& j) { return "data: " + Dump(j) + "\n\n"; }
}  // namespace

std::string ErrorJson(const ApiError& e) {
  json j = {{"error",
             {{"message", e.message},
              {"type", e.type},
              {"param", e.param.empty() ? json(nullptr) : json(e.param)},
              {"code", e.code.empty() ? json(nullptr) : json(e.code)}}}};
  return Dump(j);
}

namespace {

// Typed field readers: absent or null leaves *out untouched; a wrong type is an ApiError.
class Reader {
 public:
  explicit Reader(const json& obj) : obj_(obj) {}
  std::optional<ApiError> error;

  const json* Get(const char* key) {
    auto it = obj_.find(key);
    if (it == obj_.end() || it->is_null()) return nullptr;
    return &*it;
  }
  void Fail(const char* key, const std::string& what) {
    if (!error) error = BadRequest(absl::StrCat("'", key, "' ", what), key);
  }
  void Bool(const char* key, bool* out) {
    if (const json* v = Get(key)) {
      if (!v->is_boolean()) return Fail(key, "must be a boolean");
      *out = v->get<bool>();
    }
  }
  void String(const char* key, std::string* out) {
    if (const json* v = Get(key)) {
      if (!v->is_string()) return Fail(key, "must be a string");
      *out = v->get<std::string>();
    }
  }
  // Finite number within [lo, hi].
  bool Number(const char* key, float* out, double lo, double hi) {
    const json* v = Get(key);
    if (!v) return false;
    if (!v->is_number()) {
      Fail(key, "must be a number");
      return false;
    }
    double d = v->get<double>();
    if (!std::isfinite(d) || d < lo || d > hi) {
      Fail(key, absl::StrCat("must be in [", lo, ", ", hi, "], got ", v->dump()));
      return false;
    }
    *out = static_cast<float>(d);
    return true;
  }
  bool Int(const char* key, int64_t* out, int64_t lo, int64_t hi) {
    const json* v = Get(key);
    if (!v) return false;
    if (v->is_number_float()) {
      // JSON has one number type: 5.0 is the integer 5 (as OpenAI's and vLLM's parsers take it).
      const double d = v->get<double>();
      if (!std::isfinite(d) || d != std::floor(d)) {
        Fail(key, "must be an integer");
        return false;
      }
      // (2^63 and beyond would overflow the conversion.)
      if (d < static_cast<double>(lo) || d > static_cast<double>(hi) || std::fabs(d) >= 0x1p63) {
        Fail(key, absl::StrCat("must be in [", lo, ", ", hi, "], got ", v->dump()));
        return false;
      }
      *out = static_cast<int64_t>(d);
      return true;
    }
    if (!v->is_number_integer()) {
      Fail(key, "must be an integer");
      return false;
    }
    // Unsigned values above INT64_MAX are out of every range we accept.
    if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(hi)) {
      Fail(key, absl::StrCat("must be in [", lo, ", ", hi, "], got ", v->dump()));
      return false;
    }
    int64_t x = v->get<int64_t>();
    if (x < lo || x > hi) {
      Fail(key, absl::StrCat("must be in [", lo, ", ", hi, "], got ", x));
      return false;
    }
    *out = x;
    return true;
  }

 private:
  const json& obj_;
};

std::optional<ApiError> ParseMessages(const json& msgs, std::vector<ChatMessage>* out) {
  if (!msgs.is_array()) return BadRequest("'messages' must be an array", "messages");
  if (msgs.empty()) return BadRequest("'messages' must not be empty", "messages");
  for (size_t i = 0; i < msgs.size(); ++i) {
    const json& m = msgs[i];
    std::string where = absl::StrCat("messages[", i, "]");
    if (!m.is_object()) return BadRequest(where + " must be an object", "messages");
    ChatMessage cm;
    auto role = m.find("role");
    if (role == m.end() || !role->is_string()) {
      return BadRequest(where + ".role must be a string", "messages");
    }
    cm.role = role->get<std::string>();
    if (cm.role != "system" && cm.role != "user" && cm.role != "assistant" &&
        cm.role != "developer" && cm.role != "tool") {
      return BadRequest(where + ".role '" + cm.role + "' is not one of system, developer, user, "
                        "assistant, tool", "messages");
    }
    auto content = m.find("content");
    if (content == m.end() || content->is_null()) {
      if (cm.role != "assistant") return BadRequest(where + ".content is required", "messages");
    } else if (content->is_string()) {
      cm.content = content->get<std::string>();
    } else if (content->is_array()) {
      for (const json& part : *content) {
        if (!part.is_object() || !part.contains("type") || part["type"] != "text" ||
            !part.contains("text") || !part["text"].is_string()) {
          return BadRequest(where + ".content parts must be {\"type\": \"text\", \"text\": ...}",
                            "messages");
        }
        cm.content += part["text"].get<std::string>();
      }
    } else {
      return BadRequest(where + ".content must be a string or an array of text parts", "messages");
    }
    out->push_back(std::move(cm));
  }
  return std::nullopt;
}

std::optional<ApiError> ParsePrompt(const json& p, CompletionRequest* r) {
  auto ids_of = [](const json& arr, std::vector<int32_t>* ids) {
    for (const json& t : arr) {
      if (!t.is_number_integer()) return false;
      int64_t v = t.get<int64_t>();
      if (t.is_number_unsigned() && t.get<uint64_t>() > INT32_MAX) return false;
      if (v < 0 || v > INT32_MAX) return false;
      ids->push_back(static_cast<int32_t>(v));
    }
    return true;
  };
  if (p.is_string()) {
    r->prompt_text = p.get<std::string>();
  } else if (p.is_array()) {
    if (p.empty()) return BadRequest("'prompt' must not be empty", "prompt");
    if (p[0].is_string()) {
      if (p.size() != 1) return BadRequest("batched prompts are not supported: send one prompt per request", "prompt");
      r->prompt_text = p[0].get<std::string>();
    } else if (p[0].is_array()) {
      if (p.size() != 1) return BadRequest("batched prompts are not supported: send one prompt per request", "prompt");
      std::vector<int32_t> ids;
      if (!ids_of(p[0], &ids)) return BadRequest("'prompt' token ids must be non-negative integers", "prompt");
      r->prompt_ids = std::move(ids);
    } else {
      std::vector<int32_t> ids;
      if (!ids_of(p, &ids)) {
        return BadRequest("'prompt' must be a string, an array of token ids, or a one-element array of either", "prompt");
      }
      r->prompt_ids = std::move(ids);
    }
  } else {
    return BadRequest("'prompt' must be a string or an array of token ids", "prompt");
  }
  if ((r->prompt_text && r->prompt_text->empty()) || (r->prompt_ids && r->prompt_ids->empty())) {
    return BadRequest("'prompt' must not be empty", "prompt");
  }
  return std::nullopt;
}

}  // namespace

std::variant<CompletionRequest, ApiError> ParseCompletionRequest(std::string_view body,
                                                                  Endpoint endpoint) {
  json j = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return BadRequest("request body is not valid JSON");
  if (!j.is_object()) return BadRequest("request body must be a JSON object");
  CompletionRequest r;
  r.endpoint = endpoint;
  Reader rd(j);
  rd.String("model", &r.model);
  if (endpoint == Endpoint::kCompletions) {
    const json* p = rd.Get("prompt");
    if (!p) return BadRequest("'prompt' is required", "prompt");
    if (auto e = ParsePrompt(*p, &r)) return *e;
    rd.Bool("echo", &r.echo);
    if (const json* s = rd.Get("suffix"); s && !(s->is_string() && s->get<std::string>().empty())) {
      return BadRequest("'suffix' is not supported", "suffix");
    }
  } else {
    const json* m = rd.Get("messages");
    if (!m) return BadRequest("'messages' is required", "messages");
    if (auto e = ParseMessages(*m, &r.messages)) return *e;
    rd.Bool("add_generation_prompt", &r.add_generation_prompt);
  }
  SamplingParams& sp = r.params;
  int64_t v = 0;
  if (rd.Int("max_tokens", &v, 1, INT32_MAX)) {
    sp.max_tokens = static_cast<int32_t>(v);
    r.max_tokens_given = true;
  }
  if (endpoint == Endpoint::kChatCompletions && rd.Int("max_completion_tokens", &v, 1, INT32_MAX)) {
    sp.max_tokens = static_cast<int32_t>(v);
    r.max_tokens_given = true;
  }
  rd.Number("temperature", &sp.temperature, 0.0, 100.0);
  rd.Number("top_p", &sp.top_p, 0.0, 1.0);
  if (sp.top_p == 0.0f) return BadRequest("'top_p' must be in (0, 1]", "top_p");
  if (rd.Int("top_k", &v, -1, INT32_MAX)) sp.top_k = static_cast<int32_t>(v);
  rd.Number("min_p", &sp.min_p, 0.0, 1.0);
  rd.Number("repetition_penalty", &sp.repetition_penalty, 1e-6, 100.0);
  rd.Number("presence_penalty", &sp.presence_penalty, -2.0, 2.0);
  rd.Number("frequency_penalty", &sp.frequency_penalty, -2.0, 2.0);
  if (rd.Int("seed", &v, std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max())) {
    sp.seed = static_cast<uint64_t>(v);
  }
  rd.Bool("ignore_eos", &sp.ignore_eos);
  if (const json* s = rd.Get("stop")) {
    if (s->is_string()) {
      sp.stop.push_back(s->get<std::string>());
    } else if (s->is_array()) {
      for (const json& x : *s) {
        if (!x.is_string()) return BadRequest("'stop' must be a string or an array of strings", "stop");
        sp.stop.push_back(x.get<std::string>());
      }
    } else {
      return BadRequest("'stop' must be a string or an array of strings", "stop");
    }
    if (sp.stop.size() > 16) return BadRequest("'stop' takes at most 16 strings", "stop");
    for (const std::string& x : sp.stop) {
      if (x.empty()) return BadRequest("'stop' strings must not be empty", "stop");
    }
  }
  if (const json* s = rd.Get("stop_token_ids")) {
    if (!s->is_array()) return BadRequest("'stop_token_ids' must be an array of integers", "stop_token_ids");
    for (const json& x : *s) {
      if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() > INT32_MAX) {
        return BadRequest("'stop_token_ids' must be an array of non-negative integers", "stop_token_ids");
      }
      sp.stop_token_ids.push_back(static_cast<int32_t>(x.get<int64_t>()));
    }
  }
  if (endpoint == Endpoint::kCompletions) {
    if (rd.Int("logprobs", &v, 0, kMaxLogprobs)) {
      sp.logprobs = static_cast<int32_t>(v);
      r.want_logprobs = true;
    }
  } else {
    rd.Bool("logprobs", &r.want_logprobs);
    if (rd.Int("top_logprobs", &v, 0, kMaxLogprobs)) sp.logprobs = static_cast<int32_t>(v);
    if (!r.want_logprobs && sp.logprobs > 0) {
      return BadRequest("'top_logprobs' needs 'logprobs': true", "top_logprobs");
    }
  }
  if (rd.Int("n", &v, 1, 128) && v != 1) return BadRequest("only n = 1 is supported", "n");
  if (rd.Int("best_of", &v, 1, 128) && v != 1) return BadRequest("only best_of = 1 is supported", "best_of");
  if (const json* lb = rd.Get("logit_bias"); lb && !(lb->is_object() && lb->empty())) {
    return BadRequest("'logit_bias' is not supported", "logit_bias");
  }
  rd.Bool("stream", &r.stream);
  if (const json* so = rd.Get("stream_options")) {
    if (!so->is_object()) return BadRequest("'stream_options' must be an object", "stream_options");
    Reader sr(*so);
    sr.Bool("include_usage", &r.include_usage);
    if (sr.error) return *sr.error;
    if (!r.stream) return BadRequest("'stream_options' is only allowed with stream: true", "stream_options");
  }
  rd.String("user", &r.user);
  if (const json* kp = rd.Get("kv_policy")) {
    if (!kp->is_string()) return BadRequest("'kv_policy' must be a string", "kv_policy");
    if (auto e = SetKvPolicyField(kp->get<std::string>(), &r)) return *e;
  }
  if (const json* kb = rd.Get("kv_budget")) {
    if (!kb->is_number()) return BadRequest("'kv_budget' must be a number", "kv_budget");
    if (auto e = SetKvBudgetField(kb->get<double>(), &r)) return *e;
  }
  if (rd.error) return *rd.error;
  return r;
}

std::optional<ApiError> SetKvPolicyField(const std::string& name, CompletionRequest* r) {
  auto kind = ParseKvPolicyKind(name);
  if (!kind.ok()) return BadRequest(std::string(kind.status().message()), "kv_policy");
  r->kv_policy = *kind;
  return std::nullopt;
}

std::optional<ApiError> SetKvBudgetField(double budget, CompletionRequest* r) {
  KvPolicy probe;
  if (!SetKvBudget(budget, &probe).ok()) {
    return BadRequest(
        "'kv_budget' must be a fraction of the prompt in (0, 1] or an integer token count",
        "kv_budget");
  }
  r->kv_budget = budget;
  return std::nullopt;
}

namespace {
json UsageJson(const Usage& u) {
  json j = {{"prompt_tokens", u.prompt_tokens},
            {"completion_tokens", u.completion_tokens},
            {"total_tokens", u.prompt_tokens + u.completion_tokens}};
  if (u.kv_tokens_kept >= 0) j["kv_tokens_kept"] = u.kv_tokens_kept;
  return j;
}
json Reason(const std::string& r) { return r.empty() ? json(nullptr) : json(r); }
}  // namespace

namespace {

// Legacy completions logprobs: parallel arrays, top alternatives as {token: logprob} objects,
// text_offset the byte offset of each token in the returned text.
json CompletionLogprobsJson(const std::vector<TokenLogprobs>& logprobs, int64_t offset) {
  json tokens = json::array(), lps = json::array(), tops = json::array(), offsets = json::array();
  for (const TokenLogprobs& t : logprobs) {
    tokens.push_back(t.token);
    lps.push_back(t.logprob);
    json top = json::object();
    for (const TopLogprob& x : t.top) top[x.token] = x.logprob;
    tops.push_back(top);
    offsets.push_back(offset);
    offset += static_cast<int64_t>(t.token.size());
  }
  return {{"tokens", tokens}, {"token_logprobs", lps}, {"top_logprobs", tops},
          {"text_offset", offsets}};
}

json Bytes(const std::string& s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back(static_cast<int>(c));
  return b;
}

// Chat logprobs: {"content": [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]}.
json ChatLogprobsJson(const std::vector<TokenLogprobs>& logprobs) {
  json content = json::array();
  for (const TokenLogprobs& t : logprobs) {
    json top = json::array();
    for (const TopLogprob& x : t.top) {
      top.push_back({{"token", x.token}, {"logprob", x.logprob}, {"bytes", Bytes(x.token)}});
    }
    content.push_back({{"token", t.token},
                       {"logprob", t.logprob},
                       {"bytes", Bytes(t.token)},
                       {"top_logprobs", top}});
  }
  return {{"content", content}};
}

}  // namespace

std::string CompletionResponseJson(const std::string& id, int64_t created, const std::string& model,
                                   const std::string& text, const std::string& finish_reason,
                                   const Usage& usage, const std::vector<TokenLogprobs>* logprobs,
                                   int64_t text_offset_base) {
  json choice = {{"index", 0}, {"text", text}, {"finish_reason", Reason(finish_reason)},
                 {"logprobs", nullptr}};
  if (logprobs) choice["logprobs"] = CompletionLogprobsJson(*logprobs, text_offset_base);
  json j = {{"id", id}, {"object", "text_completion"}, {"created", created}, {"model", model},
            {"system_fingerprint", kSystemFingerprint}, {"choices", json::array({choice})},
            {"usage", UsageJson(usage)}};
  return Dump(j);
}

std::string ChatResponseJson(const std::string& id, int64_t created, const std::string& model,
                             const std::string& text, const std::string& finish_reason,
                             const Usage& usage, const std::vector<TokenLogprobs>* logprobs) {
  json choice = {{"index", 0},
                 {"message", {{"role", "assistant"}, {"content", text}}},
                 {"finish_reason", Reason(finish_reason)},
                 {"logprobs", logprobs ? ChatLogprobsJson(*logprobs) : json(nullptr)}};
  json j = {{"id", id}, {"object", "chat.completion"}, {"created", created}, {"model", model},
            {"system_fingerprint", kSystemFingerprint}, {"choices", json::array({choice})},
            {"usage", UsageJson(usage)}};
  return Dump(j);
}

std::string CompletionChunkEvent(const std::string& id, int64_t created, const std::string& model,
                                 const std::string& text, const std::string& finish_reason,
                                 const std::vector<TokenLogprobs>* logprobs,
                                 int64_t text_offset) {
  json choice = {{"index", 0}, {"text", text}, {"finish_reason", Reason(finish_reason)},
                 {"logprobs", logprobs && !logprobs->empty()
                                  ? CompletionLogprobsJson(*logprobs, text_offset)
                                  : json(nullptr)}};
  return Event({{"id", id}, {"object", "text_completion"}, {"created", created}, {"model", model},
                {"system_fingerprint", kSystemFingerprint}, {"choices", json::array({choice})}});
}

std::string ChatChunkEvent(const std::string& id, int64_t created, const std::string& model,
                           const std::string& text, const std::string& finish_reason, bool first,
                           const std::vector<TokenLogprobs>* logprobs) {
  json delta = json::object();
  if (first) delta["role"] = "assistant";
  if (!text.empty() || finish_reason.empty()) delta["content"] = text;
  json choice = {{"index", 0}, {"delta", delta}, {"finish_reason", Reason(finish_reason)},
                 {"logprobs", logprobs && !logprobs->empty() ? ChatLogprobsJson(*logprobs)
                                                             : json(nullptr)}};
  return Event({{"id", id}, {"object", "chat.completion.chunk"}, {"created", created},
                {"model", model}, {"system_fingerprint", kSystemFingerprint},
                {"choices", json::array({choice})}});
}

std::string UsageChunkEvent(Endpoint endpoint, const std::string& id, int64_t created,
                            const std::string& model, const Usage& usage) {
  return Event({{"id", id},
                {"object", endpoint == Endpoint::kChatCompletions ? "chat.completion.chunk"
                                                                   : "text_completion"},
                {"created", created},
                {"model", model},
                {"choices", json::array()},
                {"usage", UsageJson(usage)}});
}

std::string HealthJson(const std::string& status, const std::string& detail) {
  return Dump({{"status", status}, {"detail", detail}});
}

std::string ModelsJson(const std::vector<std::string>& model_ids, int64_t created,
                       int32_t max_model_len) {
  json data = json::array();
  for (const std::string& m : model_ids) {
    data.push_back({{"id", m}, {"object", "model"}, {"created", created}, {"owned_by", "kvasir"},
                    {"max_model_len", max_model_len}});
  }
  return Dump({{"object", "list"}, {"data", data}});
}

}  // namespace kvasir::api

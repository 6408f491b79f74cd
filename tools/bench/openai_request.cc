#include "tools/bench/openai_request.h"

#include "absl/strings/str_cat.h"

namespace kvasir::bench {

std::string BuildRequestBody(ApiKind kind, const RequestParams& params) {
  nlohmann::json body;
  body["model"] = params.model;
  if (kind == ApiKind::kCompletions) {
    body["prompt"] = params.prompt;
    body["max_tokens"] = params.max_tokens;
  } else {
    body["messages"] = nlohmann::json::array({{{"role", "user"}, {"content", params.prompt}}});
    // vLLM sends max_completion_tokens; servers that predate it only read max_tokens.
    body["max_completion_tokens"] = params.max_tokens;
    body["max_tokens"] = params.max_tokens;
  }
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  if (params.ignore_eos) body["ignore_eos"] = true;
  for (const auto& [k, v] : params.extra_body.items()) body[k] = v;
  return body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

StreamAccumulator::StreamAccumulator(ApiKind kind, double start_time, int prompt_len)
    : kind_(kind), last_(start_time) {
  out_.start_time = start_time;
  out_.prompt_len = prompt_len;
}

bool StreamAccumulator::OnMessage(std::string_view payload, double now) {
  if (!error_.empty()) return false;
  if (payload == "[DONE]") {
    done_ = true;
    return true;
  }
  nlohmann::json data = nlohmann::json::parse(payload, nullptr, /*allow_exceptions=*/false);
  if (data.is_discarded() || !data.is_object()) {
    error_ = absl::StrCat("malformed stream chunk: ",
                          std::string(payload.substr(0, std::min<size_t>(payload.size(), 200))));
    return false;
  }
  auto choices = data.find("choices");
  if (choices != data.end() && choices->is_array() && !choices->empty()) {
    const nlohmann::json& c0 = (*choices)[0];
    std::string text;
    if (c0.is_object()) {
      if (kind_ == ApiKind::kCompletions) {
        auto t = c0.find("text");
        if (t != c0.end() && t->is_string()) text = t->get<std::string>();
      } else {
        auto d = c0.find("delta");
        if (d != c0.end() && d->is_object()) {
          auto t = d->find("content");
          if (t != d->end() && t->is_string()) text = t->get<std::string>();
        }
      }
    }
    if (!first_) {
      first_ = true;
      out_.ttft = now - out_.start_time;
    } else {
      out_.itl.push_back(now - last_);
    }
    last_ = now;
    out_.generated_text += text;
    return true;
  }
  auto usage = data.find("usage");
  if (usage != data.end() && usage->is_object()) {
    auto ct = usage->find("completion_tokens");
    if (ct != usage->end() && ct->is_number_integer()) out_.output_tokens = ct->get<int>();
    auto pt = usage->find("prompt_tokens");
    if (pt != usage->end() && pt->is_number_integer()) out_.prompt_len = pt->get<int>();
    return true;
  }
  auto err = data.find("error");
  if (err != data.end()) {
    const nlohmann::json& e = *err;
    std::string msg = e.is_object() && e.contains("message") && e["message"].is_string()
                          ? e["message"].get<std::string>()
                          : e.dump();
    error_ = absl::StrCat("server error in stream: ", msg);
    return false;
  }
  return true;
}

RequestOutput StreamAccumulator::Finish(long http_status, const std::string& transport_error,
                                        const std::string& error_body) {
  RequestOutput out = std::move(out_);
  out.latency = last_ - out.start_time;
  if (http_status != 200 && http_status != 0) {
    out.error = absl::StrCat("HTTP ", http_status);
    if (!error_body.empty()) absl::StrAppend(&out.error, ": ", error_body);
  } else if (!error_.empty()) {
    out.error = error_;
  } else if (!transport_error.empty()) {
    out.error = transport_error;
  } else if (!first_) {
    out.error =
        "Never received a valid chunk to calculate TTFT.This response will be marked as failed!";
  }
  out.success = out.error.empty();
  return out;
}

}  // namespace kvasir::bench

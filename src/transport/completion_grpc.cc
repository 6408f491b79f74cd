#include "transport/completion_grpc.h"

#include <grpcpp/grpcpp.h>

#include <chrono>

#include "kvasir/v1/completion.grpc.pb.h"

namespace kvasir::transport {

namespace {

grpc::Status ToGrpc(const api::ApiError& e) {
  grpc::StatusCode code = grpc::StatusCode::INVALID_ARGUMENT;
  switch (e.http_status) {
    case 404: code = grpc::StatusCode::NOT_FOUND; break;
    case 429: code = grpc::StatusCode::RESOURCE_EXHAUSTED; break;
    case 503: code = grpc::StatusCode::UNAVAILABLE; break;
    case 500: code = grpc::StatusCode::INTERNAL; break;
    default: break;
  }
  return grpc::Status(code, e.message);
}

// Protobuf -> native request; the same checks as the HTTP parser where the types allow.
std::variant<api::CompletionRequest, api::ApiError> FromProto(const v1::GenerateRequest& in) {
  api::CompletionRequest r;
  r.model = in.model();
  switch (in.input_case()) {
    case v1::GenerateRequest::kPrompt:
      if (in.prompt().empty()) return api::BadRequest("'prompt' must not be empty", "prompt");
      r.prompt_text = in.prompt();
      break;
    case v1::GenerateRequest::kPromptIds: {
      std::vector<int32_t> ids(in.prompt_ids().ids().begin(), in.prompt_ids().ids().end());
      if (ids.empty()) return api::BadRequest("'prompt_ids' must not be empty", "prompt_ids");
      for (int32_t t : ids) {
        if (t < 0) return api::BadRequest("'prompt_ids' must be non-negative", "prompt_ids");
      }
      r.prompt_ids = std::move(ids);
      break;
    }
    case v1::GenerateRequest::kChat:
      r.endpoint = api::Endpoint::kChatCompletions;
      if (in.chat().messages().empty()) return api::BadRequest("'chat' has no messages", "chat");
      for (const auto& m : in.chat().messages()) {
        if (m.role() != "system" && m.role() != "user" && m.role() != "assistant" &&
            m.role() != "developer" && m.role() != "tool") {
          return api::BadRequest("unknown chat role '" + m.role() + "'", "chat");
        }
        r.messages.push_back({m.role(), m.content()});
      }
      break;
    default:
      return api::BadRequest("one of prompt, prompt_ids or chat is required", "input");
  }
  const v1::SamplingOptions& s = in.sampling();
  SamplingParams& p = r.params;
  if (s.has_max_tokens()) {
    if (s.max_tokens() < 1) return api::BadRequest("'max_tokens' must be >= 1", "max_tokens");
    p.max_tokens = s.max_tokens();
    r.max_tokens_given = true;
  }
  if (s.has_temperature()) p.temperature = s.temperature();
  if (s.has_top_p()) p.top_p = s.top_p();
  if (s.has_top_k()) p.top_k = s.top_k();
  if (s.has_min_p()) p.min_p = s.min_p();
  if (s.has_repetition_penalty()) p.repetition_penalty = s.repetition_penalty();
  if (s.has_presence_penalty()) p.presence_penalty = s.presence_penalty();
  if (s.has_frequency_penalty()) p.frequency_penalty = s.frequency_penalty();
  if (s.has_seed()) p.seed = s.seed();
  p.stop.assign(s.stop().begin(), s.stop().end());
  for (int32_t t : s.stop_token_ids()) {
    if (t < 0) return api::BadRequest("'stop_token_ids' must be non-negative", "stop_token_ids");
    p.stop_token_ids.push_back(t);
  }
  p.ignore_eos = s.ignore_eos();
  r.echo = in.echo();
  if (in.has_kv_policy()) {
    if (auto e = api::SetKvPolicyField(in.kv_policy(), &r)) return *e;
  }
  if (in.has_kv_budget()) {
    if (auto e = api::SetKvBudgetField(in.kv_budget(), &r)) return *e;
  }
  return r;  // ranges (NaN, top_p, ...) are checked by CompletionService::Start
}

}  // namespace

class CompletionGrpcServer::Impl final : public v1::Completion::Service {
 public:
  Impl(CompletionService* service, GrpcAuth auth) : service_(service), auth_(std::move(auth)) {}

  grpc::Status Generate(grpc::ServerContext* ctx, const v1::GenerateRequest* in,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override {
    KVASIR_GRPC_CHECK_AUTH(auth_, ctx);
    auto parsed = FromProto(*in);
    if (auto* e = std::get_if<api::ApiError>(&parsed)) {
      service_->metrics().RequestRejected();
      return ToGrpc(*e);
    }
    const api::CompletionRequest& req = std::get<api::CompletionRequest>(parsed);
    auto started = service_->Start(req);
    if (auto* e = std::get_if<api::ApiError>(&started)) return ToGrpc(*e);
    std::shared_ptr<CompletionStream> stream = std::get<std::shared_ptr<CompletionStream>>(started);
    bool first = true;
    while (true) {
      StreamDelta d;
      while (!stream->Next(&d, std::chrono::milliseconds(200))) {
        if (ctx->IsCancelled()) {
          stream->Cancel();
          return grpc::Status(grpc::StatusCode::CANCELLED, "client cancelled");
        }
      }
      if (d.error) return ToGrpc(*d.error);
      v1::GenerateResponse out;
      out.set_text(first && req.echo ? stream->prompt_text() + d.text : d.text);
      first = false;
      if (d.done) {
        out.set_finish_reason(d.finish_reason);
        api::Usage u = stream->usage();
        out.mutable_usage()->set_prompt_tokens(u.prompt_tokens);
        if (u.kv_tokens_kept >= 0) out.mutable_usage()->set_kv_tokens_kept(u.kv_tokens_kept);
        out.mutable_usage()->set_completion_tokens(u.completion_tokens);
      }
      if ((!out.text().empty() || d.done) && !writer->Write(out)) {
        stream->Cancel();
        return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
      }
      if (d.done) return grpc::Status::OK;
    }
  }

 private:
  CompletionService* service_;
  const GrpcAuth auth_;
};

CompletionGrpcServer::CompletionGrpcServer(CompletionService* service, GrpcAuth auth)
    : service_(service), impl_(std::make_unique<Impl>(service, std::move(auth))) {}

CompletionGrpcServer::~CompletionGrpcServer() { Stop(); }

absl::StatusOr<int> CompletionGrpcServer::Start(const std::string& host, int port) {
  return server_.Start(host, port, {impl_.get()});
}

void CompletionGrpcServer::Stop() { server_.Stop(); }

grpc::Service* CompletionGrpcServer::service() { return impl_.get(); }

}  // namespace kvasir::transport

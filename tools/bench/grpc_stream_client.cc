#include "tools/bench/grpc_stream_client.h"

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cmath>
#include <functional>
#include <memory>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/strings/str_cat.h"
#include "kvasir/v1/completion.grpc.pb.h"
#include "nlohmann/json.hpp"

namespace kvasir::bench {
namespace {

using Json = nlohmann::json;

// "gRPC RESOURCE_EXHAUSTED: queue full". gRPC's codes are absl's codes, number for number.
std::string StatusText(const grpc::Status& s) {
  return absl::StrCat("gRPC ",
                      absl::StatusCodeToString(static_cast<absl::StatusCode>(s.error_code())), ": ",
                      s.error_message());
}

// Connects before the run's clock starts, so the first requests' TTFT does not include the
// HTTP/2 handshake that every later stream on the shared connection skips. An unreachable
// target is not an error here: each request then fails with the status gRPC gives it.
void Connect(grpc::Channel& channel) {
  const auto deadline = std::chrono::system_clock::now() + std::chrono::seconds(10);
  grpc_connectivity_state state = channel.GetState(/*try_to_connect=*/true);
  while (state == GRPC_CHANNEL_IDLE || state == GRPC_CHANNEL_CONNECTING) {
    if (!channel.WaitForStateChange(state, deadline)) return;
    state = channel.GetState(/*try_to_connect=*/true);
  }
}

class GrpcRun;

// One Generate stream. Owned by GrpcRun; gRPC calls it on its own threads.
class StreamReactor final : public grpc::ClientReadReactor<v1::GenerateResponse> {
 public:
  StreamReactor(GrpcRun* run, size_t index, double run_start, RequestOutput out)
      : run_(run), index_(index), run_start_(run_start), out_(std::move(out)) {
    last_ = out_.start_time;
  }

  // `request` outlives the stream (it is the run's).
  void Start(v1::Completion::Stub* stub, const v1::GenerateRequest* request,
             const GrpcClientOptions& options, const std::string& request_id) {
    for (const auto& [key, value] : options.metadata) ctx_.AddMetadata(key, value);
    if (!request_id.empty()) ctx_.AddMetadata("x-request-id", request_id);
    // Past about 30 years a deadline would overflow system_clock; leave it unset instead.
    if (options.request_timeout_s > 0 && options.request_timeout_s < 1e9) {
      ctx_.set_deadline(std::chrono::system_clock::now() +
                        std::chrono::duration_cast<std::chrono::system_clock::duration>(
                            std::chrono::duration<double>(options.request_timeout_s)));
    }
    stub->async()->Generate(&ctx_, request, this);
    StartRead(&response_);
    StartCall();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // end of stream or an error: OnDone follows with the status
    const double now = MonotonicSeconds() - run_start_;
    last_ = now;
    if (!response_.text().empty()) {
      if (!first_) {
        first_ = true;
        out_.ttft = now - out_.start_time;
      } else {
        out_.itl.push_back(now - last_text_);
      }
      last_text_ = now;
      out_.generated_text += response_.text();
    }
    if (response_.has_usage()) {
      out_.output_tokens = response_.usage().completion_tokens();
      if (response_.usage().prompt_tokens() > 0) {
        out_.prompt_len = response_.usage().prompt_tokens();
      }
    }
    StartRead(&response_);
  }

  void OnDone(const grpc::Status& status) override;

 private:
  GrpcRun* run_;
  size_t index_;
  double run_start_;
  grpc::ClientContext ctx_;
  v1::GenerateResponse response_;
  RequestOutput out_;
  double last_ = 0;       // last message of any kind
  double last_text_ = 0;  // last message with text
  bool first_ = false;
};

class GrpcRun {
 public:
  GrpcRun(const std::vector<HttpJob>& jobs, const GrpcClientOptions& options)
      : jobs_(jobs), options_(options) {}

  absl::StatusOr<RunResult> Run() {
    const size_t n = jobs_.size();
    requests_.resize(n);
    for (size_t i = 0; i < n; ++i) {
      absl::Status s = GenerateRequestFromBody(jobs_[i].body, &requests_[i]);
      if (!s.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("backend kvasir-grpc: request ", i, ": ", s.message()));
      }
    }
    std::shared_ptr<grpc::ChannelCredentials> creds =
        options_.use_tls ? grpc::SslCredentials(grpc::SslCredentialsOptions())
                         : grpc::InsecureChannelCredentials();
    std::shared_ptr<grpc::Channel> channel = grpc::CreateChannel(options_.target, creds);
    std::unique_ptr<v1::Completion::Stub> stub = v1::Completion::NewStub(channel);
    Connect(*channel);

    const double run_start = MonotonicSeconds();
    {
      absl::MutexLock init(&mu_);  // no stream runs yet
      reactors_.resize(n);
      result_.outputs.resize(n);
      result_.run_start = run_start;
    }

    mu_.Lock();
    // Reports progress and frees finished streams; called with mu_ held, after each wake.
    int reported = 0;
    auto on_wake = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      for (size_t i : done_) reactors_[i].reset();
      done_.clear();
      if (options_.on_progress && finished_ != reported) {
        reported = finished_;
        mu_.Unlock();
        options_.on_progress(reported, static_cast<int>(n));
        mu_.Lock();
      }
    };
    for (size_t i = 0; i < n; ++i) {
      const double due = run_start + jobs_[i].arrival_s;
      // A job that fell due while an earlier one waited for a slot arrived at its due time.
      double arrived = due;
      if (MonotonicSeconds() < due) {
        while (MonotonicSeconds() < due) {
          cv_.WaitWithTimeout(&mu_, absl::Seconds(due - MonotonicSeconds()));
          on_wake();
        }
        arrived = MonotonicSeconds();
      }
      while (options_.max_concurrency > 0 && running_ >= options_.max_concurrency) {
        cv_.Wait(&mu_);
        on_wake();
      }
      ++running_;
      RequestOutput out;
      out.start_time = MonotonicSeconds() - run_start;
      out.queue_time = out.start_time - (arrived - run_start);
      out.prompt_len = jobs_[i].prompt_len;
      reactors_[i] = std::make_unique<StreamReactor>(this, i, run_start, std::move(out));
      StreamReactor* r = reactors_[i].get();
      // gRPC may finish a stream inline (OnDone takes mu_), so start it unlocked.
      mu_.Unlock();
      r->Start(stub.get(), &requests_[i], options_, jobs_[i].request_id);
      mu_.Lock();
    }
    while (finished_ < static_cast<int>(n)) {
      cv_.Wait(&mu_);
      on_wake();
    }
    result_.duration_s = MonotonicSeconds() - run_start;
    on_wake();
    RunResult result = std::move(result_);
    mu_.Unlock();
    return result;
  }

  // The stream's last act: after this returns, the run may delete it.
  void Finish(size_t index, RequestOutput out) {
    absl::MutexLock lock(&mu_);
    result_.outputs[index] = std::move(out);
    --running_;
    ++finished_;
    done_.push_back(index);
    cv_.SignalAll();
  }

 private:
  const std::vector<HttpJob>& jobs_;
  const GrpcClientOptions& options_;
  std::vector<v1::GenerateRequest> requests_;  // [jobs], read by gRPC while streams run
  absl::Mutex mu_;
  absl::CondVar cv_;
  std::vector<std::unique_ptr<StreamReactor>> reactors_ ABSL_GUARDED_BY(mu_);  // [jobs]
  std::vector<size_t> done_ ABSL_GUARDED_BY(mu_);  // finished streams not yet freed
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  int finished_ ABSL_GUARDED_BY(mu_) = 0;
  RunResult result_ ABSL_GUARDED_BY(mu_);
};

void StreamReactor::OnDone(const grpc::Status& status) {
  out_.latency = last_ - out_.start_time;
  if (!status.ok()) {
    out_.error = StatusText(status);
  } else if (!first_) {
    out_.error =
        "Never received a valid chunk to calculate TTFT.This response will be marked as failed!";
  }
  out_.success = out_.error.empty();
  run_->Finish(index_, std::move(out_));
}

absl::Status ReadFloat(const Json& v, const std::string& key, std::function<void(float)> set) {
  if (!v.is_number()) {
    return absl::InvalidArgumentError(absl::StrCat("'", key, "' must be a number"));
  }
  set(v.get<float>());
  return absl::OkStatus();
}

absl::Status ReadInt(const Json& v, const std::string& key, std::function<void(int64_t)> set) {
  if (!v.is_number_integer()) {
    return absl::InvalidArgumentError(absl::StrCat("'", key, "' must be an integer"));
  }
  set(v.get<int64_t>());
  return absl::OkStatus();
}

}  // namespace

absl::Status GenerateRequestFromBody(std::string_view body, v1::GenerateRequest* out) {
  const Json j = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("request body is not a JSON object");
  }
  out->Clear();
  v1::SamplingOptions* s = out->mutable_sampling();
  std::optional<int64_t> max_tokens, max_completion_tokens;
  for (const auto& [key, v] : j.items()) {
    if (v.is_null() || key == "stream" || key == "stream_options") continue;
    if (key == "model") {
      if (!v.is_string()) return absl::InvalidArgumentError("'model' must be a string");
      out->set_model(v.get<std::string>());
    } else if (key == "prompt") {
      if (!v.is_string()) return absl::InvalidArgumentError("'prompt' must be a string");
      out->set_prompt(v.get<std::string>());
    } else if (key == "messages") {
      if (!v.is_array()) return absl::InvalidArgumentError("'messages' must be an array");
      v1::ChatMessages* chat = out->mutable_chat();
      for (const Json& m : v) {
        if (!m.is_object() || !m.contains("role") || !m["role"].is_string() ||
            !m.contains("content") || !m["content"].is_string()) {
          return absl::InvalidArgumentError(
              "each of 'messages' needs a string 'role' and a string 'content'");
        }
        v1::ChatMessage* cm = chat->add_messages();
        cm->set_role(m["role"].get<std::string>());
        cm->set_content(m["content"].get<std::string>());
      }
    } else if (key == "max_tokens") {
      RETURN_IF_ERROR(ReadInt(v, key, [&](int64_t x) { max_tokens = x; }));
    } else if (key == "max_completion_tokens") {
      RETURN_IF_ERROR(ReadInt(v, key, [&](int64_t x) { max_completion_tokens = x; }));
    } else if (key == "temperature") {
      RETURN_IF_ERROR(ReadFloat(v, key, [s](float x) { s->set_temperature(x); }));
    } else if (key == "top_p") {
      RETURN_IF_ERROR(ReadFloat(v, key, [s](float x) { s->set_top_p(x); }));
    } else if (key == "min_p") {
      RETURN_IF_ERROR(ReadFloat(v, key, [s](float x) { s->set_min_p(x); }));
    } else if (key == "repetition_penalty") {
      RETURN_IF_ERROR(ReadFloat(v, key, [s](float x) { s->set_repetition_penalty(x); }));
    } else if (key == "presence_penalty") {
      RETURN_IF_ERROR(ReadFloat(v, key, [s](float x) { s->set_presence_penalty(x); }));
    } else if (key == "frequency_penalty") {
      RETURN_IF_ERROR(ReadFloat(v, key, [s](float x) { s->set_frequency_penalty(x); }));
    } else if (key == "top_k") {
      RETURN_IF_ERROR(ReadInt(v, key, [s](int64_t x) { s->set_top_k(static_cast<int32_t>(x)); }));
    } else if (key == "seed") {
      if (!v.is_number_integer() || v.get<int64_t>() < 0) {
        return absl::InvalidArgumentError("'seed' must be a non-negative integer");
      }
      s->set_seed(v.get<uint64_t>());
    } else if (key == "ignore_eos") {
      if (!v.is_boolean()) return absl::InvalidArgumentError("'ignore_eos' must be a boolean");
      s->set_ignore_eos(v.get<bool>());
    } else if (key == "echo") {
      if (!v.is_boolean()) return absl::InvalidArgumentError("'echo' must be a boolean");
      out->set_echo(v.get<bool>());
    } else if (key == "stop") {
      if (v.is_string()) {
        s->add_stop(v.get<std::string>());
      } else if (v.is_array()) {
        for (const Json& x : v) {
          if (!x.is_string()) return absl::InvalidArgumentError("'stop' must hold strings");
          s->add_stop(x.get<std::string>());
        }
      } else {
        return absl::InvalidArgumentError("'stop' must be a string or an array of strings");
      }
    } else if (key == "stop_token_ids") {
      if (!v.is_array()) return absl::InvalidArgumentError("'stop_token_ids' must be an array");
      for (const Json& x : v) {
        if (!x.is_number_integer()) {
          return absl::InvalidArgumentError("'stop_token_ids' must hold integers");
        }
        s->add_stop_token_ids(x.get<int32_t>());
      }
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("'", key, "' has no field in kvasir.v1.GenerateRequest"));
    }
  }
  // Chat bodies carry both (equal); max_completion_tokens is the newer name.
  if (max_completion_tokens) max_tokens = max_completion_tokens;
  if (max_tokens) s->set_max_tokens(static_cast<int32_t>(*max_tokens));
  if (out->input_case() == v1::GenerateRequest::INPUT_NOT_SET) {
    return absl::InvalidArgumentError("request has neither 'prompt' nor 'messages'");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> GrpcTargetFromUrl(std::string_view url, bool* use_tls) {
  *use_tls = false;
  std::string_view rest = url;
  bool http = false;
  if (rest.substr(0, 7) == "http://") {
    rest.remove_prefix(7);
    http = true;
  } else if (rest.substr(0, 8) == "https://") {
    rest.remove_prefix(8);
    http = true;
    *use_tls = true;
  }
  // An http(s) URL may carry a path (e.g. /v1); gRPC's target is only host:port. Other
  // targets (dns:///h:p, unix:/path) go to gRPC as given.
  if (http) rest = rest.substr(0, rest.find('/'));
  while (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  if (rest.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("no gRPC host:port in '", std::string(url), "'"));
  }
  return std::string(rest);
}

absl::StatusOr<RunResult> RunGrpcStreamingRequests(const std::vector<HttpJob>& jobs,
                                                   const GrpcClientOptions& options) {
  if (jobs.empty()) return RunResult{};
  GrpcRun run(jobs, options);
  return run.Run();
}

}  // namespace kvasir::bench

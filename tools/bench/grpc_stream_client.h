// `--backend kvasir-grpc`: runs the benchmark's jobs as kvasir.v1.Completion/Generate streams
// (proto/kvasir/v1/completion.proto) and produces the same RequestOutput records as the HTTP
// client, so metrics, report and plots do not know which transport ran.
//
// Life of a request: its OpenAI JSON body is translated to a GenerateRequest before the run ->
// the calling thread waits for its arrival time, then for a --max-concurrency slot (queue
// time) -> it starts the stream (start_time) with one grpc::ClientReadReactor -> gRPC's own
// threads stamp each message as they read it -> the final status completes the output. No
// thread per request. Timings, as vLLM defines them for the OpenAI stream:
//   TTFT    = first message with non-empty text - start_time
//   ITL     = gaps between consecutive messages with non-empty text
//   latency = last message of the stream (the one carrying finish_reason and usage)
//             - start_time
//   output tokens = usage.completion_tokens of the last message (0 when absent: metrics then
//             count the text with the tokenizer); usage.prompt_tokens replaces prompt_len.
// A non-OK status, even after some text, fails the request with "gRPC CODE: message".
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"
#include "tools/bench/http_stream_client.h"

namespace kvasir::v1 {
class GenerateRequest;
}  // namespace kvasir::v1

namespace kvasir::bench {

struct GrpcClientOptions {
  std::string target;    // "host:port", as grpc::CreateChannel takes it
  bool use_tls = false;  // https:// base URL: TLS with the system roots
  // Sent with every stream, e.g. {"authorization", "Bearer KEY"}. Keys must be lowercase.
  std::vector<std::pair<std::string, std::string>> metadata;
  int max_concurrency = 0;  // 0: unlimited
  double request_timeout_s = 6 * 3600;
  // Called on the calling thread as requests finish (not necessarily once per request, but
  // always with finished == total at the end).
  std::function<void(int finished, int total)> on_progress;
};

// Runs `jobs` (their `body` is the OpenAI JSON that BuildRequestBody makes) and returns one
// output per job, in job order. Errors only when a body cannot be expressed as a
// GenerateRequest (nothing is sent then); failures of single requests are in the outputs.
absl::StatusOr<RunResult> RunGrpcStreamingRequests(const std::vector<HttpJob>& jobs,
                                                   const GrpcClientOptions& options);

// The OpenAI completions or chat body -> GenerateRequest: model, prompt | messages,
// max_tokens (or max_completion_tokens), temperature, top_p, top_k, min_p, seed, ignore_eos,
// repetition/presence/frequency_penalty, stop, stop_token_ids. "stream" and
// "stream_options" are implied by the RPC; any other key is an error (it would be lost).
absl::Status GenerateRequestFromBody(std::string_view body, v1::GenerateRequest* out);

// --base-url / --host / --port -> gRPC target: "http://h:p/..." -> "h:p" (use_tls false),
// "https://h:p" -> "h:p" (use_tls true), "h:p" unchanged.
absl::StatusOr<std::string> GrpcTargetFromUrl(std::string_view url, bool* use_tls);

}  // namespace kvasir::bench

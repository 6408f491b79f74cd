// Drives many concurrent streaming HTTP requests from one thread: libcurl's multi interface on
// an epoll event loop (curl_multi_socket_action), with a timerfd for request arrival times and
// curl's own timeouts. No thread per request; thousands of streams fit in one core.
//
// Life of a request: its arrival time comes -> it waits for a --max-concurrency slot (queue
// time) -> it is sent (start_time) -> each body piece goes through SseParser and the
// StreamAccumulator, stamped with the time the event loop read it -> on completion, HTTP
// errors, broken streams, malformed chunks and timeouts become a failed RequestOutput with
// its reason; nothing escapes as a crash.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "common/status.h"
#include "tools/bench/metrics.h"
#include "tools/bench/openai_request.h"

namespace kvasir::bench {

// Monotonic clock in seconds (perf_counter); all RequestOutput times derive from it.
double MonotonicSeconds();

struct HttpJob {
  std::string body;        // JSON request body
  int prompt_len = 0;      // from the dataset; replaced by usage.prompt_tokens when sent
  double arrival_s = 0;    // when it becomes ready to send, seconds from the start of the run
  std::string request_id;  // sent as x-request-id when not empty
};

struct ClientOptions {
  std::string url;  // full endpoint URL
  ApiKind kind = ApiKind::kCompletions;
  std::vector<std::string> headers;  // extra "Key: Value" headers (Authorization, ...)
  int max_concurrency = 0;           // 0: unlimited
  double request_timeout_s = 6 * 3600;
  bool insecure = false;  // --insecure: do not verify TLS certificates
  // Called from the event loop thread after each request finishes.
  std::function<void(int finished, int total)> on_progress;
};

struct RunResult {
  std::vector<RequestOutput> outputs;  // in job order; times relative to run_start
  double duration_s = 0;               // first arrival slot to last completion
  double run_start = 0;                // MonotonicSeconds() at the start of the run
};

absl::StatusOr<RunResult> RunStreamingRequests(const std::vector<HttpJob>& jobs,
                                               const ClientOptions& options);

// Blocking GET, e.g. /v1/models. Returns the body; a non-2xx status is an error.
absl::StatusOr<std::string> HttpGet(const std::string& url, const std::vector<std::string>& headers,
                                    double timeout_s, bool insecure = false);

// Raises the soft RLIMIT_NOFILE to the hard limit (each stream holds one socket).
void RaiseFileLimit();

}  // namespace kvasir::bench

// An in-test OpenAI-compatible HTTP/1.1 server that streams SSE completions on a scripted
// schedule: one thread, one epoll loop, thousands of concurrent connections. It records when
// it sent every chunk, so tests compare the client's measurements with what really happened,
// and it injects faults: HTTP errors, connection resets mid-stream, malformed chunks, stalls.
#pragma once

#include <atomic>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "nlohmann/json.hpp"

namespace kvasir::bench::testing {

struct StreamPlan {
  enum class Fault { kNone, kReset, kMalformed, kStall };

  int status = 200;            // anything else: that status with a JSON error body
  double first_delay_s = 0;    // request received -> first content chunk
  std::vector<double> gaps_s;  // delay before each later content chunk (chunks = size + 1)
  int tokens_per_chunk = 1;    // words per chunk; completion_tokens = chunks * this
  bool role_chunk = false;     // chat only: a first chunk with an empty-content delta
  Fault fault = Fault::kNone;
  int fault_chunk = 0;  // the content chunk where the fault replaces normal output
};

struct ServedRequest {
  int index = 0;  // order of arrival
  std::string path;
  nlohmann::json body;
  std::string request_id;             // x-request-id header
  double received_at = 0;             // MonotonicSeconds() when the request was fully read
  std::vector<double> chunk_sent_at;  // each content chunk (with non-empty choices)
  bool finished = false;              // [DONE] and the final chunk were written
};

class FakeOpenAiServer {
 public:
  using Planner = std::function<StreamPlan(int index, const nlohmann::json& body)>;

  // Default plan: max_tokens chunks of one word, no delays.
  explicit FakeOpenAiServer(Planner planner = nullptr);
  ~FakeOpenAiServer();

  // Binds 127.0.0.1:0 and starts the loop thread. Returns the port.
  int Start();
  void Stop();

  int port() const { return port_; }
  std::string base_url() const;
  std::vector<ServedRequest> served() const;
  int max_open_connections() const { return max_open_.load(); }

 private:
  struct Conn;
  void Loop();

  Planner planner_;
  int listen_fd_ = -1;
  int epfd_ = -1;
  int stop_fd_ = -1;
  int port_ = 0;
  std::thread thread_;
  mutable std::mutex mu_;
  std::vector<ServedRequest> served_;  // guarded by mu_
  std::atomic<int> max_open_{0};
};

}  // namespace kvasir::bench::testing

// OpenAI-compatible HTTP front end (cpp-httplib): POST /v1/completions, /v1/chat/completions
// (SSE streaming with stream_options.include_usage), GET /v1/models, /health, /metrics.
// Errors are OpenAI error JSON with the right status. A streaming client that disconnects
// cancels its request (its KV blocks are freed).
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "common/status.h"
#include "router/completion_service.h"

namespace httplib {
class Server;
}

namespace kvasir::api {

struct HttpServerConfig {
  std::string host = "127.0.0.1";
  int port = 8000;           // 0: pick a free port
  std::string api_key;       // empty: no auth
  int num_threads = 128;     // concurrent connections served
};

class HttpServer {
 public:
  HttpServer(CompletionService* service, HttpServerConfig config);
  ~HttpServer();

  // Binds and starts serving on a background thread; returns the bound port.
  absl::StatusOr<int> Start();
  void Stop();
  // Blocks until Stop() (from a signal handler thread, say).
  void Wait();

 private:
  void Routes();
  CompletionService* service_;
  HttpServerConfig config_;
  std::unique_ptr<httplib::Server> server_;
  std::atomic<int> bound_port_{0};
  std::thread thread_;
};

}  // namespace kvasir::api

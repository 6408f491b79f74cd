#include "api/http_server.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdlib>

#include <httplib.h>

#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <ctime>

#include "common/logging.h"
#include "common/secret.h"

namespace kvasir::api {

namespace {

// Tells whether the client of a request handler went away, for handlers that write nothing
// until the end (cpp-httplib 0.11 does not say): finds this connection's socket among the
// process's descriptors by its ports (the peer's, and this server's port: cpp-httplib 0.11 leaves
// Request::local_port unset) and peeks at it; a read of 0 bytes means the peer closed.
class ClientSocket {
 public:
  ClientSocket(int remote_port, int local_port) : remote_(remote_port), local_(local_port) {}
  bool Gone() {
    if (fd_ < 0 && !Find()) return false;
    char c;
    const ssize_t n = recv(fd_, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
  }

 private:
  bool Find() {
    if (remote_ <= 0 || local_ <= 0 || searched_) return false;
    searched_ = true;
    DIR* dir = opendir("/proc/self/fd");
    if (!dir) return false;
    while (dirent* e = readdir(dir)) {
      const int fd = std::atoi(e->d_name);
      if (fd <= 2) continue;
      sockaddr_storage peer{}, self{};
      socklen_t pl = sizeof(peer), sl = sizeof(self);
      if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &pl) != 0 ||
          getsockname(fd, reinterpret_cast<sockaddr*>(&self), &sl) != 0) {
        continue;
      }
      if (Port(peer) == remote_ && Port(self) == local_) {
        fd_ = fd;
        break;
      }
    }
    closedir(dir);
    return fd_ >= 0;
  }
  static int Port(const sockaddr_storage& a) {
    if (a.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in&>(a).sin_port);
    if (a.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6&>(a).sin6_port);
    return -1;
  }
  const int remote_, local_;
  int fd_ = -1;
  bool searched_ = false;
};

int64_t NowUnix() { return static_cast<int64_t>(std::time(nullptr)); }

void SendError(httplib::Response& res, const ApiError& e) {
  res.status = e.http_status;
  res.set_content(ErrorJson(e), "application/json");
}

struct StreamState {
  std::shared_ptr<CompletionStream> stream;
  CompletionRequest req;
  std::string id;
  std::string model;
  int64_t created = 0;
  bool first = true;
  bool sent_done = false;
  int64_t text_offset = 0;  // completions logprobs: where the next chunk's tokens start
};

}  // namespace

HttpServer::HttpServer(CompletionService* service, HttpServerConfig config)
    : service_(service), config_(std::move(config)), server_(std::make_unique<httplib::Server>()) {
  const int threads = config_.num_threads;
  server_->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  // Streams are many small writes: without TCP_NODELAY, Nagle + delayed ACK hold each chunk
  // back ~40 ms.
  server_->set_tcp_nodelay(true);
  Routes();
}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Routes() {
  httplib::Server& s = *server_;
  const std::string key = config_.api_key;
  s.set_pre_routing_handler([key](const httplib::Request& req, httplib::Response& res) {
    if (key.empty() || req.path == "/health" || req.path == "/metrics") {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    if (!BearerMatches(req.get_header_value("Authorization"), key)) {
      ApiError e;
      e.http_status = 401;
      e.type = "authentication_error";
      e.message = "invalid or missing API key (Authorization: Bearer ...)";
      SendError(res, e);
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  s.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
    ApiError e;
    e.http_status = 500;
    e.type = "internal_error";
    e.message = "internal error";
    SendError(res, e);
  });
  s.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    if (service_->healthy()) {
      const std::string degraded = service_->degraded();
      res.set_content(degraded.empty() ? std::string("{\"status\": \"ok\"}")
                                       : HealthJson("degraded", degraded),
                      "application/json");
    } else {
      res.status = 503;
      res.set_content("{\"status\": \"no decoder worker is reachable\"}", "application/json");
    }
  });
  s.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(service_->RenderMetrics(), "text/plain; version=0.0.4");
  });
  s.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(ModelsJson({service_->model_name()}, NowUnix(), service_->max_model_len()),
                    "application/json");
  });
  auto completion = [this](Endpoint endpoint) {
    return [this, endpoint](const httplib::Request& hreq, httplib::Response& res) {
      auto parsed = ParseCompletionRequest(hreq.body, endpoint);
      if (auto* e = std::get_if<ApiError>(&parsed)) {
        service_->metrics().RequestRejected();
        return SendError(res, *e);
      }
      auto st = std::make_shared<StreamState>();
      st->req = std::move(std::get<CompletionRequest>(parsed));
      auto started = service_->Start(st->req);
      if (auto* e = std::get_if<ApiError>(&started)) return SendError(res, *e);
      st->stream = std::get<std::shared_ptr<CompletionStream>>(started);
      static std::atomic<uint64_t> counter{0};
      st->id = absl::StrCat(endpoint == Endpoint::kChatCompletions ? "chatcmpl-" : "cmpl-",
                            NowUnix(), "-", counter.fetch_add(1));
      st->model = service_->model_name();
      st->created = NowUnix();

      if (!st->req.stream) {
        std::string text = st->req.echo ? st->stream->prompt_text() : "";
        std::vector<TokenLogprobs> lps;
        StreamDelta d;
        ClientSocket client(hreq.remote_port, bound_port_.load());
        auto next_check = std::chrono::steady_clock::now();
        while (true) {
          const bool got = st->stream->Next(&d, std::chrono::milliseconds(100));
          if (std::chrono::steady_clock::now() >= next_check) {
            next_check += std::chrono::milliseconds(100);
            if (client.Gone()) {  // nobody will read the answer: stop and free the KV
              st->stream->Cancel();
              return;
            }
          }
          if (!got) continue;
          if (d.error) return SendError(res, *d.error);
          text += d.text;
          lps.insert(lps.end(), d.logprobs.begin(), d.logprobs.end());
          if (d.done) break;
        }
        Usage u = st->stream->usage();
        const std::string reason = d.finish_reason;
        const std::vector<TokenLogprobs>* asked = st->req.want_logprobs ? &lps : nullptr;
        if (endpoint == Endpoint::kChatCompletions) {
          res.set_content(ChatResponseJson(st->id, st->created, st->model, text, reason, u, asked),
                          "application/json");
        } else {
          const int64_t base = st->req.echo ? static_cast<int64_t>(st->stream->prompt_text().size()) : 0;
          res.set_content(CompletionResponseJson(st->id, st->created, st->model, text, reason, u,
                                                 asked, base),
                          "application/json");
        }
        return;
      }

      res.set_header("Cache-Control", "no-cache");
      res.set_chunked_content_provider(
          "text/event-stream",
          [st, endpoint](size_t, httplib::DataSink& sink) {
            auto send = [&](const std::string& ev) { return sink.write(ev.data(), ev.size()); };
            const bool chat = endpoint == Endpoint::kChatCompletions;
            if (st->first) {
              st->first = false;
              bool ok = true;
              if (chat) {
                ok = send(ChatChunkEvent(st->id, st->created, st->model, "", "", true));
              } else if (st->req.echo && !st->stream->prompt_text().empty()) {
                ok = send(CompletionChunkEvent(st->id, st->created, st->model, st->stream->prompt_text(), ""));
                st->text_offset = static_cast<int64_t>(st->stream->prompt_text().size());
              }
              if (!ok) return false;
            }
            StreamDelta d;
            // Wait in short slices so a vanished client is noticed.
            while (!st->stream->Next(&d, std::chrono::milliseconds(200))) {
              if (!sink.is_writable()) return false;
            }
            if (d.error) {
              send("data: " + ErrorJson(*d.error) + "\n\n");
              send(kDoneEvent);
              sink.done();
              return true;
            }
            const std::vector<TokenLogprobs>* lps = st->req.want_logprobs ? &d.logprobs : nullptr;
            const int64_t offset = st->text_offset;
            if (lps) {
              for (const TokenLogprobs& t : d.logprobs) st->text_offset += static_cast<int64_t>(t.token.size());
            }
            if (!d.text.empty() || d.done) {
              std::string ev = chat ? ChatChunkEvent(st->id, st->created, st->model, d.text, d.finish_reason, false, lps)
                                    : CompletionChunkEvent(st->id, st->created, st->model, d.text, d.finish_reason, lps, offset);
              if (!d.text.empty() && d.done) {
                // Text and finish in separate chunks, as OpenAI streams do.
                ev = chat ? ChatChunkEvent(st->id, st->created, st->model, d.text, "", false, lps)
                          : CompletionChunkEvent(st->id, st->created, st->model, d.text, "", lps, offset);
                if (!send(ev)) return false;
                ev = chat ? ChatChunkEvent(st->id, st->created, st->model, "", d.finish_reason, false)
                          : CompletionChunkEvent(st->id, st->created, st->model, "", d.finish_reason);
              }
              if (!send(ev)) return false;
            }
            if (d.done) {
              if (st->req.include_usage) {
                send(UsageChunkEvent(endpoint, st->id, st->created, st->model, st->stream->usage()));
              }
              send(kDoneEvent);
              st->sent_done = true;
              sink.done();
            }
            return true;
          },
          [st](bool success) {
            if (!success || !st->sent_done) st->stream->Cancel();
          });
    };
  };
  s.Post("/v1/completions", completion(Endpoint::kCompletions));
  s.Post("/v1/chat/completions", completion(Endpoint::kChatCompletions));
  s.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    ApiError e;
    e.http_status = res.status;
    e.type = res.status == 404 ? "NotFoundError" : "invalid_request_error";
    e.message = res.status == 404 ? "no route " + req.method + " " + req.path : "bad request";
    SendError(res, e);
  });
  s.set_payload_max_length(64 << 20);
}

absl::StatusOr<int> HttpServer::Start() {
  // The library listens with a backlog of 5; remember the socket to raise it after binding,
  // so bursts of concurrent clients are not dropped.
  auto listen_fd = std::make_shared<std::atomic<int>>(-1);
  server_->set_socket_options([listen_fd](socket_t sock) {
    httplib::default_socket_options(sock);
    listen_fd->store(sock);
  });
  int port = config_.port;
  if (port == 0) {
    port = server_->bind_to_any_port(config_.host);
  } else if (!server_->bind_to_port(config_.host, port)) {
    port = -1;
  }
  if (port <= 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", config_.host, ":", config_.port));
  }
  if (listen_fd->load() >= 0) ::listen(listen_fd->load(), 4096);
  bound_port_ = port;
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  return port;
}

void HttpServer::Stop() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

void HttpServer::Wait() {
  if (thread_.joinable()) thread_.join();
}

}  // namespace kvasir::api

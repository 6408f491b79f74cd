#include "tools/bench/testing/fake_openai_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <queue>
#include <stdexcept>

namespace kvasir::bench::testing {
namespace {

double Now() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

std::string HttpChunk(const std::string& data) {
  char hex[32];
  std::snprintf(hex, sizeof(hex), "%zx\r\n", data.size());
  return std::string(hex) + data + "\r\n";
}

std::string Reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 429:
      return "Too Many Requests";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    default:
      return "Error";
  }
}

}  // namespace

struct FakeOpenAiServer::Conn {
  int fd = -1;
  uint64_t id = 0;
  std::string in;
  std::string out;
  bool want_write = false;
  // The stream in progress, if any.
  bool streaming = false;
  bool chat = false;
  StreamPlan plan;
  int served_index = -1;
  int next_chunk = 0;  // content chunks sent so far
  int total_chunks = 0;
  bool include_usage = false;
  int prompt_tokens = 0;
  double next_at = 0;
  bool role_sent = false;
};

FakeOpenAiServer::FakeOpenAiServer(Planner planner) : planner_(std::move(planner)) {}

FakeOpenAiServer::~FakeOpenAiServer() { Stop(); }

std::string FakeOpenAiServer::base_url() const {
  return "http://127.0.0.1:" + std::to_string(port_);
}

std::vector<ServedRequest> FakeOpenAiServer::served() const {
  std::lock_guard<std::mutex> lock(mu_);
  return served_;
}

int FakeOpenAiServer::Start() {
  listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(listen_fd_, 4096) != 0) {
    throw std::runtime_error(std::string("fake server bind/listen: ") + std::strerror(errno));
  }
  socklen_t len = sizeof(addr);
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  epfd_ = epoll_create1(EPOLL_CLOEXEC);
  stop_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = 0;  // listen socket
  epoll_ctl(epfd_, EPOLL_CTL_ADD, listen_fd_, &ev);
  ev.data.u64 = 1;  // stop
  epoll_ctl(epfd_, EPOLL_CTL_ADD, stop_fd_, &ev);
  thread_ = std::thread([this] { Loop(); });
  return port_;
}

void FakeOpenAiServer::Stop() {
  if (!thread_.joinable()) return;
  uint64_t one = 1;
  (void)!write(stop_fd_, &one, sizeof(one));
  thread_.join();
  close(listen_fd_);
  close(epfd_);
  close(stop_fd_);
}

void FakeOpenAiServer::Loop() {
  std::map<uint64_t, std::unique_ptr<Conn>> conns;  // id -> connection
  uint64_t next_id = 2;                             // 0 = listen, 1 = stop
  using Timer = std::pair<double, uint64_t>;        // (when, conn id)
  std::priority_queue<Timer, std::vector<Timer>, std::greater<Timer>> timers;

  auto update_epoll = [&](Conn* c) {
    epoll_event ev{};
    ev.events = EPOLLIN | (c->out.empty() ? 0u : static_cast<uint32_t>(EPOLLOUT));
    ev.data.u64 = c->id;
    epoll_ctl(epfd_, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_write = !c->out.empty();
  };
  auto flush = [&](Conn* c) -> bool {  // false: connection broke
    while (!c->out.empty()) {
      const ssize_t n = send(c->fd, c->out.data(), c->out.size(), MSG_NOSIGNAL);
      if (n > 0) {
        c->out.erase(0, static_cast<size_t>(n));
      } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        break;
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else {
        return false;
      }
    }
    if (c->want_write != !c->out.empty()) update_epoll(c);
    return true;
  };
  auto close_conn = [&](uint64_t id, bool reset) {
    auto it = conns.find(id);
    if (it == conns.end()) return;
    if (reset) {
      linger lg{1, 0};  // close with RST
      setsockopt(it->second->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    epoll_ctl(epfd_, EPOLL_CTL_DEL, it->second->fd, nullptr);
    close(it->second->fd);
    conns.erase(it);
  };
  auto record_chunk = [&](Conn* c, double t) {
    std::lock_guard<std::mutex> lock(mu_);
    served_[c->served_index].chunk_sent_at.push_back(t);
  };
  auto content_event = [&](Conn* c, const std::string& text) {
    nlohmann::json j;
    j["id"] = "cmpl-" + std::to_string(c->served_index);
    j["model"] = "fake-model";
    if (c->chat) {
      j["object"] = "chat.completion.chunk";
      j["choices"] = {{{"index", 0}, {"delta", {{"content", text}}}, {"finish_reason", nullptr}}};
    } else {
      j["object"] = "text_completion";
      j["choices"] = {{{"index", 0}, {"text", text}, {"finish_reason", nullptr}}};
    }
    return "data: " + j.dump() + "\n\n";
  };

  // Sends the stream's next step; returns false when the connection was closed.
  auto step = [&](Conn* c) -> bool {
    const StreamPlan& p = c->plan;
    if (c->chat && p.role_chunk && !c->role_sent) {
      c->role_sent = true;
      nlohmann::json j;
      j["object"] = "chat.completion.chunk";
      j["choices"] = {{{"index", 0}, {"delta", {{"role", "assistant"}, {"content", ""}}}}};
      c->out += HttpChunk("data: " + j.dump() + "\n\n");
      // Stamped before send(): the client cannot read a chunk earlier than this.
      const double t = Now();
      if (!flush(c)) return false;
      record_chunk(c, t);
    } else if (c->next_chunk < c->total_chunks) {
      const int k = c->next_chunk++;
      if (p.fault != StreamPlan::Fault::kNone && k == p.fault_chunk) {
        if (p.fault == StreamPlan::Fault::kReset) {
          flush(c);
          close_conn(c->id, /*reset=*/true);
          return false;
        }
        if (p.fault == StreamPlan::Fault::kStall) return true;                // never sends again
        c->out += HttpChunk("data: {\"choices\": [{\"text\": \"oops\"\n\n");  // kMalformed
      } else {
        std::string text;
        for (int w = 0; w < p.tokens_per_chunk; ++w) text += "tok ";
        c->out += HttpChunk(content_event(c, text));
      }
      const double t = Now();
      if (!flush(c)) return false;
      record_chunk(c, t);
    }
    if (c->next_chunk < c->total_chunks) {
      const int k = c->next_chunk;  // index of the next content chunk
      const double gap = k == 0 ? p.first_delay_s : p.gaps_s[k - 1];
      c->next_at += gap;
      timers.emplace(c->next_at, c->id);
      return true;
    }
    // Done: usage, [DONE], end of chunked body; the connection stays open (keep-alive).
    if (c->include_usage) {
      nlohmann::json u;
      u["choices"] = nlohmann::json::array();
      const int completion = c->total_chunks * p.tokens_per_chunk;
      u["usage"] = {{"prompt_tokens", c->prompt_tokens},
                    {"completion_tokens", completion},
                    {"total_tokens", c->prompt_tokens + completion}};
      c->out += HttpChunk("data: " + u.dump() + "\n\n");
    }
    c->out += HttpChunk("data: [DONE]\n\n");
    c->out += "0\r\n\r\n";
    c->streaming = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      served_[c->served_index].finished = true;
    }
    return flush(c);
  };

  // Parses complete requests out of c->in; returns false when the connection was closed.
  auto handle_input = [&](Conn* c) -> bool {
    while (!c->streaming) {
      const size_t hdr_end = c->in.find("\r\n\r\n");
      if (hdr_end == std::string::npos) return true;
      const std::string head = c->in.substr(0, hdr_end);
      size_t content_length = 0;
      std::string request_id;
      size_t pos = head.find("\r\n");
      const std::string request_line = head.substr(0, pos);
      while (pos != std::string::npos && pos < head.size()) {
        const size_t next = head.find("\r\n", pos + 2);
        std::string line =
            head.substr(pos + 2, next == std::string::npos ? std::string::npos : next - pos - 2);
        const size_t colon = line.find(':');
        if (colon != std::string::npos) {
          std::string name = line.substr(0, colon);
          for (char& ch : name)
            ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
          std::string value = line.substr(colon + 1);
          while (!value.empty() && value.front() == ' ') value.erase(0, 1);
          if (name == "content-length") content_length = std::stoul(value);
          if (name == "x-request-id") request_id = value;
        }
        pos = next;
      }
      if (c->in.size() < hdr_end + 4 + content_length) return true;
      const std::string body = c->in.substr(hdr_end + 4, content_length);
      c->in.erase(0, hdr_end + 4 + content_length);
      const double received = Now();
      const size_t sp1 = request_line.find(' ');
      const size_t sp2 = request_line.find(' ', sp1 + 1);
      const std::string method = request_line.substr(0, sp1);
      const std::string path = request_line.substr(sp1 + 1, sp2 - sp1 - 1);

      if (method == "GET" && path == "/v1/models") {
        const std::string models =
            R"({"object":"list","data":[{"id":"fake-model","object":"model","root":"fake-model"}]})";
        c->out += "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
                  std::to_string(models.size()) + "\r\n\r\n" + models;
        if (!flush(c)) return false;
        continue;
      }
      const bool chat = path == "/v1/chat/completions";
      if (method != "POST" || (!chat && path != "/v1/completions")) {
        const std::string msg = R"({"error":{"message":"not found"}})";
        c->out += "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: " +
                  std::to_string(msg.size()) + "\r\n\r\n" + msg;
        if (!flush(c)) return false;
        continue;
      }
      nlohmann::json j = nlohmann::json::parse(body, nullptr, false);
      int index;
      {
        std::lock_guard<std::mutex> lock(mu_);
        index = static_cast<int>(served_.size());
        ServedRequest s;
        s.index = index;
        s.path = path;
        s.body = j;
        s.request_id = request_id;
        s.received_at = received;
        served_.push_back(std::move(s));
      }
      int max_tokens = 16;
      if (j.is_object()) {
        if (j.contains("max_tokens") && j["max_tokens"].is_number_integer()) {
          max_tokens = j["max_tokens"].get<int>();
        }
      }
      StreamPlan plan;
      if (planner_) {
        plan = planner_(index, j);
      } else {
        plan.gaps_s.assign(std::max(0, max_tokens - 1), 0.0);
      }
      if (plan.status != 200) {
        const std::string msg = R"({"error":{"message":"injected failure","code":)" +
                                std::to_string(plan.status) + "}}";
        c->out +=
            "HTTP/1.1 " + std::to_string(plan.status) + " " + Reason(plan.status) +
            "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(msg.size()) +
            "\r\n\r\n" + msg;
        if (!flush(c)) return false;
        continue;
      }
      c->streaming = true;
      c->chat = chat;
      c->plan = plan;
      c->served_index = index;
      c->next_chunk = 0;
      c->role_sent = false;
      c->total_chunks = static_cast<int>(plan.gaps_s.size()) + 1;
      c->include_usage = j.is_object() && j.contains("stream_options") &&
                         j["stream_options"].is_object() &&
                         j["stream_options"].value("include_usage", false);
      c->prompt_tokens = 0;
      // Prompt tokens: one per word, like the client's fallback counter.
      std::string prompt_text;
      if (j.is_object() && j.contains("prompt") && j["prompt"].is_string()) {
        prompt_text = j["prompt"].get<std::string>();
      } else if (j.is_object() && j.contains("messages") && j["messages"].is_array()) {
        for (const auto& m : j["messages"]) {
          if (m.is_object() && m.contains("content") && m["content"].is_string()) {
            prompt_text += m["content"].get<std::string>() + " ";
          }
        }
      }
      bool in_word = false;
      for (char ch : prompt_text) {
        const bool space = std::isspace(static_cast<unsigned char>(ch)) != 0;
        if (!space && !in_word) ++c->prompt_tokens;
        in_word = !space;
      }
      c->out +=
          "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
          "Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n";
      if (!flush(c)) return false;
      c->next_at = received + (plan.role_chunk && chat ? 0.0 : plan.first_delay_s);
      if (plan.role_chunk && chat) {
        // The role chunk goes out at once; the first content chunk after first_delay_s.
        c->next_at = received;
      }
      timers.emplace(c->next_at, c->id);
    }
    return true;
  };

  std::vector<epoll_event> events(1024);
  while (true) {
    int timeout_ms = -1;
    if (!timers.empty()) {
      const double wait = timers.top().first - Now();
      timeout_ms = wait <= 0 ? 0 : static_cast<int>(std::ceil(wait * 1000.0));
    }
    const int n = epoll_wait(epfd_, events.data(), static_cast<int>(events.size()), timeout_ms);
    if (n < 0 && errno != EINTR) break;
    bool stop = false;
    for (int i = 0; i < n; ++i) {
      const uint64_t id = events[i].data.u64;
      if (id == 1) {
        stop = true;
        continue;
      }
      if (id == 0) {
        while (true) {
          const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (fd < 0) break;
          int one = 1;
          setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
          auto c = std::make_unique<Conn>();
          c->fd = fd;
          c->id = next_id++;
          epoll_event ev{};
          ev.events = EPOLLIN;
          ev.data.u64 = c->id;
          epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev);
          conns.emplace(c->id, std::move(c));
          if (static_cast<int>(conns.size()) > max_open_.load()) {
            max_open_.store(static_cast<int>(conns.size()));
          }
        }
        continue;
      }
      auto it = conns.find(id);
      if (it == conns.end()) continue;
      Conn* c = it->second.get();
      if (events[i].events & EPOLLOUT) {
        if (!flush(c)) {
          close_conn(id, false);
          continue;
        }
      }
      if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        char buf[16384];
        bool closed = false;
        while (true) {
          const ssize_t r = recv(c->fd, buf, sizeof(buf), 0);
          if (r > 0) {
            c->in.append(buf, static_cast<size_t>(r));
          } else if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            closed = true;
            break;
          } else if (errno == EINTR) {
            continue;
          } else {
            break;
          }
        }
        if (closed) {
          close_conn(id, false);
          continue;
        }
        if (!handle_input(c)) close_conn(id, false);
      }
    }
    if (stop) break;
    const double now = Now();
    while (!timers.empty() && timers.top().first <= now) {
      const uint64_t id = timers.top().second;
      timers.pop();
      auto it = conns.find(id);
      if (it == conns.end() || !it->second->streaming) continue;
      Conn* c = it->second.get();
      if (!step(c)) {
        close_conn(id, false);
        continue;
      }
      if (!c->streaming && !handle_input(c)) close_conn(id, false);
    }
  }
  for (auto& [id, c] : conns) close(c->fd);
}

}  // namespace kvasir::bench::testing

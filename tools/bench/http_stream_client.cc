#include "tools/bench/http_stream_client.h"

#include <curl/curl.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <deque>
#include <limits>
#include <memory>

#include "absl/strings/str_cat.h"
#include "tools/bench/sse_parser.h"

namespace kvasir::bench {
namespace {

constexpr double kNever = std::numeric_limits<double>::infinity();
constexpr size_t kMaxErrorBody = 512;

void EnsureCurlInit() {
  static const bool done = [] { return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK; }();
  (void)done;
}

struct Transfer {
  size_t index = 0;
  CURL* easy = nullptr;
  curl_slist* headers = nullptr;
  SseParser parser;
  std::unique_ptr<StreamAccumulator> acc;
  long status = -1;
  std::string error_body;
  double run_start = 0;
  double last_read = 0;
  char errbuf[CURL_ERROR_SIZE] = {0};

  ~Transfer() {
    if (easy) curl_easy_cleanup(easy);
    if (headers) curl_slist_free_all(headers);
  }
};

size_t OnWrite(char* data, size_t size, size_t nmemb, void* userp) {
  auto* t = static_cast<Transfer*>(userp);
  const size_t len = size * nmemb;
  const double now = MonotonicSeconds() - t->run_start;
  t->last_read = now;
  if (t->status < 0) curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &t->status);
  if (t->status != 200) {
    const size_t room = kMaxErrorBody - std::min(kMaxErrorBody, t->error_body.size());
    t->error_body.append(data, std::min(room, len));
    return len;
  }
  for (const std::string& msg : t->parser.Feed(std::string_view(data, len))) {
    if (!t->acc->OnMessage(msg, now)) return 0;  // malformed: abort this transfer
  }
  return len;
}

class EventLoop {
 public:
  EventLoop(const std::vector<HttpJob>& jobs, const ClientOptions& options)
      : jobs_(jobs), options_(options) {}

  ~EventLoop() {
    transfers_.clear();
    if (multi_) curl_multi_cleanup(multi_);
    if (epfd_ >= 0) close(epfd_);
    if (tfd_ >= 0) close(tfd_);
  }

  absl::StatusOr<RunResult> Run() {
    EnsureCurlInit();
    epfd_ = epoll_create1(EPOLL_CLOEXEC);
    tfd_ = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (epfd_ < 0 || tfd_ < 0) return absl::InternalError(std::strerror(errno));
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = tfd_;
    if (epoll_ctl(epfd_, EPOLL_CTL_ADD, tfd_, &ev) != 0) {
      return absl::InternalError(std::strerror(errno));
    }
    multi_ = curl_multi_init();
    if (!multi_) return absl::InternalError("curl_multi_init failed");
    curl_multi_setopt(multi_, CURLMOPT_SOCKETFUNCTION, &EventLoop::OnSocket);
    curl_multi_setopt(multi_, CURLMOPT_SOCKETDATA, this);
    curl_multi_setopt(multi_, CURLMOPT_TIMERFUNCTION, &EventLoop::OnTimer);
    curl_multi_setopt(multi_, CURLMOPT_TIMERDATA, this);
    // Keep idle connections for reuse by later requests (keep-alive, as aiohttp does).
    const long cache =
        std::max<long>(64, options_.max_concurrency > 0 ? options_.max_concurrency
                                                        : static_cast<long>(jobs_.size()));
    curl_multi_setopt(multi_, CURLMOPT_MAXCONNECTS, cache);

    result_.outputs.resize(jobs_.size());
    arrived_at_.assign(jobs_.size(), 0.0);
    transfers_.resize(jobs_.size());
    run_start_ = MonotonicSeconds();
    result_.run_start = run_start_;

    std::vector<epoll_event> events(1024);
    while (finished_ < jobs_.size()) {
      AdmitArrivals();
      if (MonotonicSeconds() >= curl_deadline_) {
        curl_deadline_ = kNever;
        int running = 0;
        curl_multi_socket_action(multi_, CURL_SOCKET_TIMEOUT, 0, &running);
        DrainCompleted();
        AdmitArrivals();
        // Fall through to epoll even if curl wants another timeout at once: socket events
        // must not starve behind a stream of zero timeouts (the timerfd then fires at once).
        if (finished_ == jobs_.size()) break;
      }
      ArmTimer();
      const int n = epoll_wait(epfd_, events.data(), static_cast<int>(events.size()), -1);
      if (n < 0) {
        if (errno == EINTR) continue;
        return absl::InternalError(absl::StrCat("epoll_wait: ", std::strerror(errno)));
      }
      for (int i = 0; i < n; ++i) {
        const int fd = events[i].data.fd;
        if (fd == tfd_) {
          uint64_t expirations;
          while (read(tfd_, &expirations, sizeof(expirations)) > 0) {
          }
          continue;
        }
        int flags = 0;
        if (events[i].events & EPOLLIN) flags |= CURL_CSELECT_IN;
        if (events[i].events & EPOLLOUT) flags |= CURL_CSELECT_OUT;
        if (events[i].events & (EPOLLERR | EPOLLHUP)) flags |= CURL_CSELECT_ERR;
        int running = 0;
        curl_multi_socket_action(multi_, fd, flags, &running);
      }
      DrainCompleted();
    }
    result_.duration_s = MonotonicSeconds() - run_start_;
    return std::move(result_);
  }

 private:
  static int OnSocket(CURL*, curl_socket_t s, int what, void* userp, void*) {
    auto* self = static_cast<EventLoop*>(userp);
    if (what == CURL_POLL_REMOVE) {
      epoll_ctl(self->epfd_, EPOLL_CTL_DEL, s, nullptr);
      return 0;
    }
    epoll_event ev{};
    ev.data.fd = s;
    if (what & CURL_POLL_IN) ev.events |= EPOLLIN;
    if (what & CURL_POLL_OUT) ev.events |= EPOLLOUT;
    if (epoll_ctl(self->epfd_, EPOLL_CTL_MOD, s, &ev) != 0 && errno == ENOENT) {
      epoll_ctl(self->epfd_, EPOLL_CTL_ADD, s, &ev);
    }
    return 0;
  }

  static int OnTimer(CURLM*, long timeout_ms, void* userp) {
    auto* self = static_cast<EventLoop*>(userp);
    self->curl_deadline_ = timeout_ms < 0 ? kNever : MonotonicSeconds() + timeout_ms / 1000.0;
    return 0;
  }

  void AdmitArrivals() {
    const double now = MonotonicSeconds() - run_start_;
    while (next_arrival_ < jobs_.size() && jobs_[next_arrival_].arrival_s <= now) {
      arrived_at_[next_arrival_] = now;
      waiting_.push_back(next_arrival_++);
    }
    while (!waiting_.empty() && (options_.max_concurrency <= 0 ||
                                 running_ < static_cast<size_t>(options_.max_concurrency))) {
      const size_t i = waiting_.front();
      waiting_.pop_front();
      Start(i);
    }
  }

  void Start(size_t i) {
    auto t = std::make_unique<Transfer>();
    t->index = i;
    t->run_start = run_start_;
    t->easy = curl_easy_init();
    CURL* e = t->easy;
    t->headers = curl_slist_append(t->headers, "Content-Type: application/json");
    t->headers = curl_slist_append(t->headers, "Accept: text/event-stream");
    t->headers = curl_slist_append(t->headers, "Expect:");  // no 100-continue round trip
    for (const std::string& h : options_.headers)
      t->headers = curl_slist_append(t->headers, h.c_str());
    if (!jobs_[i].request_id.empty()) {
      t->headers = curl_slist_append(t->headers,
                                     absl::StrCat("x-request-id: ", jobs_[i].request_id).c_str());
    }
    curl_easy_setopt(e, CURLOPT_URL, options_.url.c_str());
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, jobs_[i].body.data());
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(jobs_[i].body.size()));
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &OnWrite);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, t.get());
    curl_easy_setopt(e, CURLOPT_PRIVATE, t.get());
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    if (options_.insecure) {
      curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
      curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS,
                     static_cast<long>(std::llround(options_.request_timeout_s * 1000.0)));
    const double start = MonotonicSeconds() - run_start_;
    t->acc = std::make_unique<StreamAccumulator>(options_.kind, start, jobs_[i].prompt_len);
    t->last_read = start;
    result_.outputs[i].queue_time = start - arrived_at_[i];
    const CURLMcode rc = curl_multi_add_handle(multi_, e);
    ++running_;
    transfers_[i] = std::move(t);
    if (rc != CURLM_OK) {
      Complete(i, CURLE_FAILED_INIT, curl_multi_strerror(rc));
    }
  }

  void DrainCompleted() {
    int queued = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi_, &queued)) {
      if (msg->msg != CURLMSG_DONE) continue;
      Transfer* t = nullptr;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &t);
      curl_multi_remove_handle(multi_, msg->easy_handle);
      Complete(t->index, msg->data.result, "");
    }
  }

  void Complete(size_t i, CURLcode code, const std::string& extra) {
    Transfer* t = transfers_[i].get();
    if (t->status < 0) curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &t->status);
    std::string transport_error;
    if (code == CURLE_OK) {
      if (t->status == 200) {
        for (const std::string& msg : t->parser.Finish()) t->acc->OnMessage(msg, t->last_read);
      }
    } else {
      transport_error = absl::StrCat(curl_easy_strerror(code),
                                     t->errbuf[0] ? absl::StrCat(": ", t->errbuf) : "", extra);
    }
    const double queue_time = result_.outputs[i].queue_time;
    result_.outputs[i] =
        t->acc->Finish(t->status < 0 ? 0 : t->status, transport_error, t->error_body);
    result_.outputs[i].queue_time = queue_time;
    transfers_[i].reset();
    --running_;
    ++finished_;
    if (options_.on_progress) {
      options_.on_progress(static_cast<int>(finished_), static_cast<int>(jobs_.size()));
    }
  }

  void ArmTimer() {
    double deadline = curl_deadline_;
    // Wake for arrivals even while they would only queue: their queue time starts then.
    if (next_arrival_ < jobs_.size()) {
      deadline = std::min(deadline, run_start_ + jobs_[next_arrival_].arrival_s);
    }
    itimerspec spec{};
    if (deadline != kNever) {
      // MonotonicSeconds() is CLOCK_MONOTONIC (steady_clock on Linux), so absolute times match.
      const double d = std::max(deadline, 1e-6);
      spec.it_value.tv_sec = static_cast<time_t>(d);
      spec.it_value.tv_nsec = static_cast<long>((d - std::floor(d)) * 1e9);
    }
    timerfd_settime(tfd_, TFD_TIMER_ABSTIME, &spec, nullptr);
  }

  const std::vector<HttpJob>& jobs_;
  const ClientOptions& options_;
  CURLM* multi_ = nullptr;
  int epfd_ = -1;
  int tfd_ = -1;
  double run_start_ = 0;
  double curl_deadline_ = kNever;
  size_t next_arrival_ = 0;
  size_t running_ = 0;
  size_t finished_ = 0;
  std::deque<size_t> waiting_;
  std::vector<double> arrived_at_;
  std::vector<std::unique_ptr<Transfer>> transfers_;
  RunResult result_;
};

size_t AppendBody(char* data, size_t size, size_t nmemb, void* userp) {
  static_cast<std::string*>(userp)->append(data, size * nmemb);
  return size * nmemb;
}

}  // namespace

double MonotonicSeconds() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

absl::StatusOr<RunResult> RunStreamingRequests(const std::vector<HttpJob>& jobs,
                                               const ClientOptions& options) {
  if (jobs.empty()) return RunResult{};
  EventLoop loop(jobs, options);
  return loop.Run();
}

absl::StatusOr<std::string> HttpGet(const std::string& url, const std::vector<std::string>& headers,
                                    double timeout_s, bool insecure) {
  EnsureCurlInit();
  CURL* e = curl_easy_init();
  if (!e) return absl::InternalError("curl_easy_init failed");
  curl_slist* list = nullptr;
  for (const std::string& h : headers) list = curl_slist_append(list, h.c_str());
  std::string body;
  char errbuf[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(e, CURLOPT_URL, url.c_str());
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, list);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &AppendBody);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, &body);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout_s * 1000));
  if (insecure) {
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  const CURLcode rc = curl_easy_perform(e);
  long status = 0;
  curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_cleanup(e);
  curl_slist_free_all(list);
  if (rc != CURLE_OK) {
    return absl::UnavailableError(
        absl::StrCat("GET ", url, ": ", curl_easy_strerror(rc), errbuf[0] ? ": " : "", errbuf));
  }
  if (status < 200 || status >= 300) {
    return absl::UnavailableError(
        absl::StrCat("GET ", url, ": HTTP ", status, ": ", body.substr(0, kMaxErrorBody)));
  }
  return body;
}

void RaiseFileLimit() {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
  }
}

}  // namespace kvasir::bench

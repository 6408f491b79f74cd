#include "transport/attention_tcp.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <utility>

#include "common/dtype.h"
#include "common/logging.h"
#include "common/secret.h"

namespace kvasir::transport {

static_assert(std::endian::native == std::endian::little,
              "the TCP data plane's frames are little-endian, as the host's memory");

namespace {

constexpr uint32_t kMagic = 0x3141564B;  // "KVA1"
constexpr uint32_t kMaxPayload = uint32_t{1} << 30;
constexpr size_t kHeaderBytes = 16;
constexpr size_t kStepHeaderBytes = 16;
constexpr size_t kItemBytes = 24;
enum FrameType : uint16_t { kHello = 1, kHelloOk = 2, kStep = 3, kStepReply = 4, kError = 5 };

struct Header {
  uint32_t magic = kMagic;
  uint16_t type = 0;
  uint16_t reserved = 0;
  uint32_t length = 0;
  uint32_t seq = 0;
};
static_assert(sizeof(Header) == kHeaderBytes);

struct WireItem {
  int64_t segment_key;
  int32_t q_start;
  int32_t num_queries;
  int32_t num_append;
  int32_t reserved;
};
static_assert(sizeof(WireItem) == kItemBytes);

template <typename T>
void Put(std::vector<char>* out, const T& v) {
  const char* p = reinterpret_cast<const char*>(&v);
  out->insert(out->end(), p, p + sizeof(T));
}

template <typename T>
T Get(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

size_t ElemBytes(WireDType t) { return t == WireDType::kBF16 ? 2 : 4; }

// Appends `rows` rows of `width` floats, `stride` apart, in `t`.
void PutRows(std::vector<char>* out, const float* src, int64_t rows, int64_t width,
             int64_t stride, WireDType t) {
  const size_t at = out->size();
  out->resize(at + static_cast<size_t>(rows * width) * ElemBytes(t));
  char* dst = out->data() + at;
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = src + r * stride;
    if (t == WireDType::kF32) {
      std::memcpy(dst + r * width * 4, row, width * 4);
    } else {
      uint16_t* d = reinterpret_cast<uint16_t*>(dst) + r * width;
      for (int64_t i = 0; i < width; ++i) d[i] = F32ToBF16(row[i]);
    }
  }
}

// Reads n elements of `t` at src into dst (fp32).
void GetRows(const char* src, int64_t n, WireDType t, float* dst) {
  if (t == WireDType::kF32) {
    std::memcpy(dst, src, n * 4);
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = BF16ToF32(Get<uint16_t>(src + 2 * i));
  }
}

bool WriteAll(int fd, const char* p, size_t n) {
  while (n > 0) {
    const ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// 1: read, 0: the peer closed before the first byte, -1: error (or closed mid-way).
int ReadAll(int fd, char* p, size_t n) {
  size_t got = 0;
  while (got < n) {
    const ssize_t r = ::recv(fd, p + got, n - got, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) return got == 0 ? 0 : -1;
    if (r < 0) return -1;
    got += static_cast<size_t>(r);
  }
  return 1;
}

bool SendFrame(int fd, FrameType type, uint32_t seq, const char* payload, size_t n) {
  Header h;
  h.type = type;
  h.length = static_cast<uint32_t>(n);
  h.seq = seq;
  std::vector<char> buf;
  buf.reserve(kHeaderBytes + n);
  Put(&buf, h);
  if (n > 0) buf.insert(buf.end(), payload, payload + n);
  return WriteAll(fd, buf.data(), buf.size());
}

bool SendError(int fd, uint32_t seq, const absl::Status& st) {
  std::vector<char> p;
  Put(&p, static_cast<int32_t>(st.code()));
  const std::string msg(st.message());
  p.insert(p.end(), msg.begin(), msg.end());
  return SendFrame(fd, kError, seq, p.data(), p.size());
}

absl::Status ErrorFromPayload(const std::vector<char>& p, const std::string& what) {
  if (p.size() < 4) return absl::DataLossError(what + ": truncated error frame");
  const int32_t code = Get<int32_t>(p.data());
  std::string msg(p.begin() + 4, p.end());
  if (code <= 0 || code > static_cast<int32_t>(absl::StatusCode::kUnauthenticated)) {
    return absl::DataLossError(absl::StrCat(what, ": error frame with code ", code, ": ", msg));
  }
  return absl::Status(static_cast<absl::StatusCode>(code), absl::StrCat(what, ": ", msg));
}

void SetNoDelay(int fd) {
  int one = 1;
  (void)::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

void SetTimeouts(int fd, std::chrono::milliseconds rcv, std::chrono::milliseconds snd) {
  auto tv = [](std::chrono::milliseconds ms) {
    timeval t{};
    t.tv_sec = static_cast<time_t>(ms.count() / 1000);
    t.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
    return t;
  };
  const timeval r = tv(rcv), s = tv(snd);
  (void)::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &r, sizeof(r));
  (void)::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &s, sizeof(s));
}

// "host:port", "[v6]:port".
absl::Status SplitHostPort(const std::string& hp, std::string* host, std::string* port) {
  const size_t colon = hp.rfind(':');
  if (colon == std::string::npos || colon + 1 == hp.size()) {
    return absl::InvalidArgumentError("not host:port: " + hp);
  }
  *host = hp.substr(0, colon);
  *port = hp.substr(colon + 1);
  if (host->size() >= 2 && host->front() == '[' && host->back() == ']') {
    *host = host->substr(1, host->size() - 2);
  }
  return absl::OkStatus();
}

// Connects within `timeout`; the socket is blocking afterwards.
absl::StatusOr<int> ConnectTcp(const std::string& hp, std::chrono::milliseconds timeout) {
  std::string host, port;
  RETURN_IF_ERROR(SplitHostPort(hp, &host, &port));
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (int e = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &res); e != 0) {
    return absl::UnavailableError(absl::StrCat("cannot resolve ", hp, ": ", gai_strerror(e)));
  }
  std::string last = "no address";
  for (addrinfo* a = res; a != nullptr; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    const int flags = ::fcntl(fd, F_GETFL, 0);
    (void)::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    int rc = ::connect(fd, a->ai_addr, a->ai_addrlen);
    if (rc < 0 && errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      rc = ::poll(&p, 1, static_cast<int>(timeout.count()));
      if (rc == 1) {
        int err = 0;
        socklen_t len = sizeof(err);
        (void)::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        rc = err == 0 ? 0 : -1;
        errno = err;
      } else {
        rc = -1;
        errno = rc == 0 ? ETIMEDOUT : errno;
      }
    }
    if (rc == 0) {
      (void)::fcntl(fd, F_SETFL, flags);
      ::freeaddrinfo(res);
      SetNoDelay(fd);
      return fd;
    }
    last = std::strerror(errno);
    ::close(fd);
  }
  ::freeaddrinfo(res);
  return absl::UnavailableError(absl::StrCat("cannot connect to ", hp, ": ", last));
}

}  // namespace

// ---------------------------------------------------------------------------------------------

AttentionTcpServer::AttentionTcpServer(AttentionShard* shard, std::string secret)
    : shard_(shard), secret_(std::move(secret)) {}

AttentionTcpServer::~AttentionTcpServer() { Stop(); }

absl::StatusOr<int> AttentionTcpServer::Start(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* res = nullptr;
  const std::string h = host.size() >= 2 && host.front() == '[' ? host.substr(1, host.size() - 2)
                                                                : host;
  if (int e = ::getaddrinfo(h.empty() ? nullptr : h.c_str(), std::to_string(port).c_str(),
                            &hints, &res);
      e != 0) {
    return absl::InvalidArgumentError(absl::StrCat("cannot resolve ", host, ": ", gai_strerror(e)));
  }
  int fd = -1;
  std::string err = "no address";
  for (addrinfo* a = res; a != nullptr && fd < 0; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    int one = 1;
    (void)::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd, a->ai_addr, a->ai_addrlen) != 0 || ::listen(fd, 64) != 0) {
      err = std::strerror(errno);
      ::close(fd);
      fd = -1;
    }
  }
  ::freeaddrinfo(res);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("attention data plane cannot listen on ", host, ":", port, ": ", err));
  }
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  (void)::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const int bound = addr.ss_family == AF_INET6
                        ? ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port)
                        : ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  listen_fd_ = fd;
  acceptor_ = std::thread([this] { AcceptLoop(); });
  return bound;
}

void AttentionTcpServer::Stop() {
  std::vector<std::unique_ptr<Conn>> conns;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
    for (auto& c : conns_) {
      if (!c->done) ::shutdown(c->fd, SHUT_RDWR);
    }
  }
  if (listen_fd_ >= 0) ::shutdown(listen_fd_, SHUT_RDWR);
  if (acceptor_.joinable()) acceptor_.join();
  if (listen_fd_ >= 0) ::close(listen_fd_);
  listen_fd_ = -1;
  {
    absl::MutexLock lock(&mu_);
    conns.swap(conns_);
  }
  for (auto& c : conns) {
    if (c->thread.joinable()) c->thread.join();
  }
}

void AttentionTcpServer::AcceptLoop() {
  while (true) {
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      const bool transient =
          errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM;
      {
        absl::MutexLock lock(&mu_);
        if (stopping_ || !transient) return;
      }
      // Out of descriptors for now: back off rather than spin.
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    absl::MutexLock lock(&mu_);
    if (stopping_) {
      ::close(fd);
      return;
    }
    // Join the threads of connections that have ended.
    for (auto it = conns_.begin(); it != conns_.end();) {
      if ((*it)->done) {
        (*it)->thread.join();
        it = conns_.erase(it);
      } else {
        ++it;
      }
    }
    auto conn = std::make_unique<Conn>();
    conn->fd = fd;
    Conn* raw = conn.get();
    conns_.push_back(std::move(conn));
    raw->thread = std::thread([this, raw] { Serve(raw); });
  }
}

void AttentionTcpServer::Serve(Conn* conn) {
  const int fd = conn->fd;
  SetNoDelay(fd);
  const AttentionShape& sh = shard_->shape();
  const int64_t qw = sh.q_dim(), kvw = sh.kv_dim(), H = sh.num_heads;
  std::vector<char> payload, reply;
  std::vector<float> qkv_f32, o, lse;
  std::vector<ShardItem> items;
  auto finish = [&] {
    absl::MutexLock lock(&mu_);
    ::close(fd);
    conn->done = true;
  };

  // Handshake: HELLO within 5 s carrying the cluster secret.
  SetTimeouts(fd, std::chrono::seconds(5), std::chrono::seconds(5));
  Header h;
  if (ReadAll(fd, reinterpret_cast<char*>(&h), kHeaderBytes) != 1 || h.magic != kMagic ||
      h.type != kHello || h.length > 4096) {
    (void)SendError(fd, h.seq, absl::InvalidArgumentError("expected a HELLO frame"));
    return finish();
  }
  payload.resize(h.length);
  if (h.length > 0 && ReadAll(fd, payload.data(), h.length) != 1) return finish();
  if (!secret_.empty() &&
      !BearerMatches(std::string_view(payload.data(), payload.size()), secret_)) {
    (void)SendError(fd, h.seq,
                    absl::UnauthenticatedError("the attention data plane needs the cluster secret"));
    return finish();
  }
  if (!SendFrame(fd, kHelloOk, h.seq, nullptr, 0)) return finish();
  // Idle connections are fine (the poll below waits without a limit); a frame that has begun
  // must arrive, and a reply leave, within a minute.
  SetTimeouts(fd, std::chrono::seconds(60), std::chrono::seconds(60));

  while (true) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, -1) < 0 && errno != EINTR) break;
    const int rc = ReadAll(fd, reinterpret_cast<char*>(&h), kHeaderBytes);
    if (rc != 1) break;  // closed (0) or broken
    if (h.magic != kMagic || h.type != kStep || h.length > kMaxPayload ||
        h.length < kStepHeaderBytes) {
      (void)SendError(fd, h.seq, absl::InvalidArgumentError("malformed frame"));
      break;
    }
    payload.resize(h.length);
    if (ReadAll(fd, payload.data(), h.length) != 1) break;
    steps_served_.fetch_add(1, std::memory_order_relaxed);
    const char* pp = payload.data();
    const int32_t layer = Get<int32_t>(pp);
    const int32_t num_items = Get<int32_t>(pp + 4);
    const uint32_t dtype_raw = Get<uint32_t>(pp + 8);
    const uint64_t max_items = (h.length - kStepHeaderBytes) / kItemBytes;
    if (num_items < 0 || static_cast<uint64_t>(num_items) > max_items || dtype_raw > 1) {
      (void)SendError(fd, h.seq, absl::InvalidArgumentError("malformed STEP header"));
      break;
    }
    const WireDType dtype = static_cast<WireDType>(dtype_raw);
    const size_t eb = ElemBytes(dtype);
    // Sizes first: every count against the payload, as the gRPC service checks its bytes.
    int64_t rows = 0, elems = 0;
    bool ok = true;
    items.assign(num_items, ShardItem{});
    const char* ip = pp + kStepHeaderBytes;
    for (int32_t i = 0; i < num_items && ok; ++i) {
      const WireItem w = Get<WireItem>(ip + i * kItemBytes);
      if (w.num_queries < 0 || w.num_append < 0 || w.num_append > w.num_queries) ok = false;
      ShardItem& s = items[i];
      s.segment_key = w.segment_key;
      s.q_start = w.q_start;
      s.num_queries = w.num_queries;
      s.num_append = w.num_append;
      rows += w.num_queries;
      elems += int64_t{w.num_queries} * qw + 2 * int64_t{w.num_append} * kvw;
    }
    const size_t tensors_at = kStepHeaderBytes + static_cast<size_t>(num_items) * kItemBytes;
    if (!ok || tensors_at + static_cast<size_t>(elems) * eb != h.length) {
      if (!SendError(fd, h.seq,
                     absl::InvalidArgumentError(absl::StrCat(
                         "STEP tensor bytes do not match its counts and the model's shapes (q ",
                         qw, ", kv ", kvw, " values per row)")))) {
        break;
      }
      continue;
    }
    qkv_f32.resize(elems);
    GetRows(pp + tensors_at, elems, dtype, qkv_f32.data());
    float* f = qkv_f32.data();
    for (ShardItem& s : items) {
      s.q = f;
      s.q_stride = qw;
      f += int64_t{s.num_queries} * qw;
      s.k = f;
      f += int64_t{s.num_append} * kvw;
      s.v = f;
      f += int64_t{s.num_append} * kvw;
      s.kv_stride = kvw;
    }
    o.resize(rows * qw);
    lse.resize(rows * H);
    absl::Status st = shard_->Step(layer, items, o.data(), lse.data());
    if (!st.ok()) {
      if (!SendError(fd, h.seq, st)) break;
      continue;
    }
    reply.clear();
    Header rh;
    rh.type = kStepReply;
    rh.seq = h.seq;
    rh.length = static_cast<uint32_t>(rows * qw * eb + rows * H * 4);
    Put(&reply, rh);
    PutRows(&reply, o.data(), rows, qw, qw, dtype);
    PutRows(&reply, lse.data(), rows, H, H, WireDType::kF32);
    if (!WriteAll(fd, reply.data(), reply.size())) break;
  }
  finish();
}

// ---------------------------------------------------------------------------------------------

TcpAttentionLink::TcpAttentionLink(std::string name,
                                   std::function<absl::StatusOr<std::string>()> resolve,
                                   std::string secret, AttentionShape shape,
                                   std::chrono::milliseconds timeout, WireDType dtype)
    : name_(std::move(name)),
      resolve_(std::move(resolve)),
      secret_(std::move(secret)),
      shape_(shape),
      timeout_(timeout),
      dtype_(dtype) {}

TcpAttentionLink::~TcpAttentionLink() { Drop(absl::CancelledError(name_ + ": link closed")); }

void TcpAttentionLink::Drop(const absl::Status& st) {
  std::deque<Pending> failed;
  {
    absl::MutexLock lock(&mu_);
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    failed.swap(pending_);
  }
  for (Pending& p : failed) p.done(st);
}

absl::StatusOr<int> TcpAttentionLink::Connect() {
  ASSIGN_OR_RETURN(const std::string where, resolve_());
  ASSIGN_OR_RETURN(const int fd,
                   ConnectTcp(where, std::min<std::chrono::milliseconds>(timeout_,
                                                                         std::chrono::seconds(2))));
  // HELLO, answered within the step deadline (sends and partial reads are bounded by it too).
  SetTimeouts(fd, timeout_, timeout_);
  const std::string hello = secret_.empty() ? std::string() : "Bearer " + secret_;
  Header h;
  std::vector<char> reply;
  absl::Status st;
  if (!SendFrame(fd, kHello, 0, hello.data(), hello.size()) ||
      ReadAll(fd, reinterpret_cast<char*>(&h), kHeaderBytes) != 1 || h.magic != kMagic ||
      h.length > 4096) {
    st = absl::UnavailableError("data-plane handshake failed");
  } else {
    reply.resize(h.length);
    if (h.length > 0 && ReadAll(fd, reply.data(), h.length) != 1) {
      st = absl::UnavailableError("data-plane handshake failed");
    } else if (h.type == kError) {
      st = ErrorFromPayload(reply, "worker");
    } else if (h.type != kHelloOk) {
      st = absl::DataLossError("unexpected handshake reply");
    }
  }
  if (!st.ok()) {
    ::close(fd);
    return st;
  }
  return fd;
}

void TcpAttentionLink::Step(int32_t layer, std::span<const ShardItem> items, int64_t rows,
                            float* o, float* lse, std::function<void(absl::Status)> done) {
  bool connected;
  {
    absl::MutexLock lock(&mu_);
    connected = fd_ >= 0;
  }
  if (!connected) {
    absl::StatusOr<int> fd = Connect();  // no lock held across the network
    if (!fd.ok()) {
      const absl::Status& e = fd.status();
      done(absl::Status(e.code() == absl::StatusCode::kUnauthenticated ? e.code()
                                                                       : absl::StatusCode::kUnavailable,
                        absl::StrCat(name_, ": ", e.message())));
      return;
    }
    absl::MutexLock lock(&mu_);
    fd_ = *fd;
  }

  const int64_t qw = shape_.q_dim(), kvw = shape_.kv_dim();
  int64_t elems = 0;
  for (const ShardItem& it : items) {
    elems += int64_t{it.num_queries} * qw + 2 * int64_t{it.num_append} * kvw;
  }
  const size_t length = kStepHeaderBytes + items.size() * kItemBytes +
                        static_cast<size_t>(elems) * ElemBytes(dtype_);
  if (length > kMaxPayload) {
    done(absl::InvalidArgumentError(absl::StrCat(name_, ": a STEP of ", length,
                                                 " bytes exceeds the frame limit")));
    return;
  }
  bool sent;
  {
    absl::MutexLock lock(&mu_);
    std::vector<char>& frame = frame_;
    frame.clear();
    frame.reserve(kHeaderBytes + length);
    Header h;
    h.type = kStep;
    h.length = static_cast<uint32_t>(length);
    h.seq = next_seq_++;
    Put(&frame, h);
    Put(&frame, layer);
    Put(&frame, static_cast<int32_t>(items.size()));
    Put(&frame, static_cast<uint32_t>(dtype_));
    Put(&frame, uint32_t{0});
    for (const ShardItem& it : items) {
      Put(&frame, WireItem{it.segment_key, it.q_start, it.num_queries, it.num_append, 0});
    }
    for (const ShardItem& it : items) {
      PutRows(&frame, it.q, it.num_queries, qw, it.q_stride, dtype_);
      PutRows(&frame, it.k, it.num_append, kvw, it.kv_stride, dtype_);
      PutRows(&frame, it.v, it.num_append, kvw, it.kv_stride, dtype_);
    }
    pending_.push_back({h.seq, rows, o, lse, std::move(done),
                        std::chrono::steady_clock::now() + timeout_});
    last_sent_ = static_cast<int64_t>(frame.size());
    sent = WriteAll(fd_, frame.data(), frame.size());
  }
  if (!sent) {
    Drop(absl::UnavailableError(absl::StrCat(name_, ": send failed: ", std::strerror(errno))));
  }
}

void TcpAttentionLink::Collect() {
  const int64_t qw = shape_.q_dim(), H = shape_.num_heads;
  const size_t eb = ElemBytes(dtype_);
  while (true) {
    int fd;
    std::chrono::steady_clock::time_point deadline;
    {
      absl::MutexLock lock(&mu_);
      if (pending_.empty() || fd_ < 0) return;
      fd = fd_;
      deadline = pending_.front().deadline;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd p{fd, POLLIN, 0};
    const int rc = ::poll(&p, 1, static_cast<int>(std::max<int64_t>(left.count(), 0)));
    if (rc < 0 && errno == EINTR) continue;
    if (rc == 0) {
      if (std::chrono::steady_clock::now() < deadline) continue;
      Drop(absl::DeadlineExceededError(
          absl::StrCat(name_, ": no attention reply within ", timeout_.count(), " ms")));
      return;
    }
    Header h;
    if (rc < 0 || ReadAll(fd, reinterpret_cast<char*>(&h), kHeaderBytes) != 1) {
      Drop(absl::UnavailableError(name_ + ": connection closed by the attention worker"));
      return;
    }
    if (h.magic != kMagic || (h.type != kStepReply && h.type != kError) || h.length > kMaxPayload) {
      Drop(absl::DataLossError(name_ + ": malformed frame from the attention worker"));
      return;
    }
    Pending req;
    absl::Status st;
    {
      absl::MutexLock lock(&mu_);
      payload_.resize(h.length);
      if (h.length > 0 && ReadAll(fd, payload_.data(), h.length) != 1) {
        st = absl::UnavailableError(name_ + ": connection closed mid-frame");
      } else if (pending_.empty() || pending_.front().seq != h.seq) {
        st = absl::DataLossError(name_ + ": reply to no request");
      } else {
        req = std::move(pending_.front());
        pending_.pop_front();
        last_received_ = static_cast<int64_t>(kHeaderBytes + h.length);
        if (h.type == kError) {
          st = ErrorFromPayload(payload_, name_);
        } else {
          const size_t o_bytes = static_cast<size_t>(req.rows * qw) * eb;
          const size_t l_bytes = static_cast<size_t>(req.rows * H) * 4;
          if (payload_.size() != o_bytes + l_bytes) {
            st = absl::DataLossError(name_ + ": reply sizes do not match the request");
          } else {
            GetRows(payload_.data(), req.rows * qw, dtype_, req.o);
            GetRows(payload_.data() + o_bytes, req.rows * H, WireDType::kF32, req.lse);
          }
        }
      }
    }
    if (req.done) {
      const bool protocol_error = absl::IsDataLoss(st);
      req.done(st);
      if (protocol_error) {
        Drop(st);
        return;
      }
    } else {
      Drop(st);  // unreadable or unmatched: the stream cannot be trusted any more
      return;
    }
  }
}

}  // namespace kvasir::transport

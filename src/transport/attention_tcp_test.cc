// The TCP data plane against AttentionShard::Step called directly: the same steps give the same
// bits in fp32 and stay within bf16 rounding with bf16 on the wire; the cluster secret is
// checked; a worker's error keeps the connection; a dead worker is UNAVAILABLE and a restarted
// one (new port) is reached again; a frozen one is DEADLINE_EXCEEDED within the deadline; a
// malformed frame closes only its own connection.
#include "transport/attention_tcp.h"
#include "transport/attention_grpc.h"
#include "transport/grpc_server.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <future>
#include <random>
#include <thread>

#include "gtest/gtest.h"
#include "runtime/cpu/cpu_backend.h"

namespace kvasir::transport {
namespace {

const AttentionShape kShape{4, 2, 8, 2};  // H, KVH, d, layers
constexpr int64_t kKey = 7;

struct StepData {
  std::vector<float> qkv;  // [rows, q | k | v]
  int32_t q_start = 0;
  int32_t rows = 0;
};

// rows new tokens at q_start, random q, k, v.
StepData MakeStep(std::mt19937* rng, int32_t q_start, int32_t rows) {
  std::normal_distribution<float> n(0.0f, 1.0f);
  StepData s;
  s.q_start = q_start;
  s.rows = rows;
  s.qkv.resize(static_cast<size_t>(rows) * (kShape.q_dim() + 2 * kShape.kv_dim()));
  for (float& x : s.qkv) x = n(*rng);
  return s;
}

ShardItem ItemOf(const StepData& s) {
  const int64_t stride = kShape.q_dim() + 2 * kShape.kv_dim();
  ShardItem it;
  it.segment_key = kKey;
  it.q_start = s.q_start;
  it.num_queries = s.rows;
  it.q = s.qkv.data();
  it.q_stride = stride;
  it.num_append = s.rows;
  it.k = s.qkv.data() + kShape.q_dim();
  it.v = it.k + kShape.kv_dim();
  it.kv_stride = stride;
  return it;
}

// Runs one step through the link and waits for it.
absl::Status LinkStep(TcpAttentionLink& link, int32_t layer, const ShardItem& it, float* o,
                      float* lse) {
  std::promise<absl::Status> p;
  link.Step(layer, std::span<const ShardItem>(&it, 1), it.num_queries, o, lse,
            [&](absl::Status st) { p.set_value(std::move(st)); });
  link.Collect();
  return p.get_future().get();
}

struct Worker {
  explicit Worker(std::string secret = "s3cret")
      : backend(1), shard(kShape, 4, 256, &backend), server(&shard, std::move(secret)) {
    EXPECT_TRUE(shard.AllocateSegment(kKey, 0, 64).ok());
    auto p = server.Start("127.0.0.1", 0);
    EXPECT_TRUE(p.ok()) << p.status();
    port = p.ok() ? *p : 0;
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port); }
  CpuBackend backend;
  AttentionShard shard;
  AttentionTcpServer server;
  int port = 0;
};

TEST(AttentionTcp, SameBitsAsTheShardInFp32AndBf16WithinRounding) {
  Worker remote;
  CpuBackend backend(1);
  AttentionShard direct(kShape, 4, 256, &backend);
  ASSERT_TRUE(direct.AllocateSegment(kKey, 0, 64).ok());
  Worker remote_bf16;
  const std::string addr = remote.address(), addr16 = remote_bf16.address();
  TcpAttentionLink link("w", [&] { return addr; }, "s3cret", kShape,
                        std::chrono::seconds(5));
  TcpAttentionLink link16("w16", [&] { return addr16; }, "s3cret", kShape,
                          std::chrono::seconds(5), WireDType::kBF16);
  std::mt19937 rng(3);
  int32_t pos = 0;
  double max_rel = 0.0;
  for (int32_t rows : {5, 1, 1, 3, 1}) {
    const StepData s = MakeStep(&rng, pos, rows);
    pos += rows;
    for (int32_t layer = 0; layer < kShape.num_layers; ++layer) {
      const ShardItem it = ItemOf(s);
      std::vector<float> o(rows * kShape.q_dim()), lse(rows * kShape.num_heads);
      std::vector<float> o2 = o, lse2 = lse, o3 = o, lse3 = lse;
      ASSERT_TRUE(direct.Step(layer, std::span<const ShardItem>(&it, 1), o.data(), lse.data()).ok());
      ASSERT_TRUE(LinkStep(link, layer, it, o2.data(), lse2.data()).ok());
      ASSERT_TRUE(LinkStep(link16, layer, it, o3.data(), lse3.data()).ok());
      EXPECT_EQ(0, std::memcmp(o.data(), o2.data(), o.size() * sizeof(float)));
      EXPECT_EQ(0, std::memcmp(lse.data(), lse2.data(), lse.size() * sizeof(float)));
      double num = 0.0, den = 0.0;
      for (size_t i = 0; i < o.size(); ++i) {
        num += (o[i] - o3[i]) * (o[i] - o3[i]);
        den += o[i] * o[i];
      }
      max_rel = std::max(max_rel, std::sqrt(num / den));
    }
  }
  // bf16 keeps 8 bits of mantissa: q, k, v and o each rounded once (2^-9 relative each).
  EXPECT_LT(max_rel, 1e-2);
  EXPECT_GT(max_rel, 0.0);  // the wire really was bf16
  // The frames: header + step header + item + rows of q | k | v, fp32 and half of it in bf16.
  const auto [sent32, got32] = link.last_frame_bytes();
  const auto [sent16, got16] = link16.last_frame_bytes();
  EXPECT_EQ(sent32, 16 + 16 + 24 + 1 * (kShape.q_dim() + 2 * kShape.kv_dim()) * 4);
  EXPECT_EQ(got32, 16 + 1 * kShape.q_dim() * 4 + 1 * kShape.num_heads * 4);
  EXPECT_EQ(sent16, 16 + 16 + 24 + 1 * (kShape.q_dim() + 2 * kShape.kv_dim()) * 2);
  EXPECT_EQ(got16, 16 + 1 * kShape.q_dim() * 2 + 1 * kShape.num_heads * 4);
}

TEST(AttentionTcp, TheClusterSecretIsChecked) {
  Worker w;
  const std::string addr = w.address();
  std::mt19937 rng(1);
  const StepData s = MakeStep(&rng, 0, 2);
  const ShardItem it = ItemOf(s);
  std::vector<float> o(2 * kShape.q_dim()), lse(2 * kShape.num_heads);
  for (const char* secret : {"", "wrong"}) {
    TcpAttentionLink link("w", [&] { return addr; }, secret, kShape, std::chrono::seconds(2));
    const absl::Status st = LinkStep(link, 0, it, o.data(), lse.data());
    EXPECT_EQ(st.code(), absl::StatusCode::kUnauthenticated) << st;
  }
  EXPECT_EQ(w.shard.Info().free_blocks, 256 - 64 / 4 * kShape.num_layers * kShape.num_kv_heads);
  // An open worker takes any caller.
  Worker open("");
  const std::string open_addr = open.address();
  TcpAttentionLink link("w", [&] { return open_addr; }, "anything", kShape,
                        std::chrono::seconds(2));
  EXPECT_TRUE(LinkStep(link, 0, it, o.data(), lse.data()).ok());
}

TEST(AttentionTcp, AWorkerErrorKeepsTheConnection) {
  Worker w;
  const std::string addr = w.address();
  TcpAttentionLink link("attention worker 1", [&] { return addr; }, "s3cret", kShape, std::chrono::seconds(2));
  std::mt19937 rng(2);
  const StepData s = MakeStep(&rng, 0, 2);
  ShardItem bad = ItemOf(s);
  bad.segment_key = 99;  // not held there
  std::vector<float> o(2 * kShape.q_dim()), lse(2 * kShape.num_heads);
  const absl::Status st = LinkStep(link, 0, bad, o.data(), lse.data());
  EXPECT_EQ(st.code(), absl::StatusCode::kNotFound) << st;
  EXPECT_NE(std::string(st.message()).find("attention worker"), std::string::npos) << st;
  EXPECT_TRUE(LinkStep(link, 0, ItemOf(s), o.data(), lse.data()).ok());
  EXPECT_EQ(link.last_frame_bytes().second, 16 + 2 * kShape.q_dim() * 4 + 2 * kShape.num_heads * 4);
}

TEST(AttentionTcp, DeadWorkerIsUnavailableAndARestartedOneIsReachedAgain) {
  auto w = std::make_unique<Worker>();
  std::string addr = w->address();
  TcpAttentionLink link("w", [&] { return addr; }, "s3cret", kShape, std::chrono::seconds(2));
  std::mt19937 rng(4);
  const StepData s = MakeStep(&rng, 0, 1);
  std::vector<float> o(kShape.q_dim()), lse(kShape.num_heads);
  ASSERT_TRUE(LinkStep(link, 0, ItemOf(s), o.data(), lse.data()).ok());
  w.reset();  // the worker dies: its connection closes
  const auto t0 = std::chrono::steady_clock::now();
  absl::Status st = LinkStep(link, 1, ItemOf(s), o.data(), lse.data());
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable) << st;
  st = LinkStep(link, 1, ItemOf(s), o.data(), lse.data());  // reconnecting is refused
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable) << st;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
  w = std::make_unique<Worker>();  // back, on another port
  addr = w->address();
  EXPECT_TRUE(LinkStep(link, 0, ItemOf(s), o.data(), lse.data()).ok());
}

// A worker that completes the handshake and then never answers (SIGSTOP'd, wedged).
TEST(AttentionTcp, FrozenWorkerIsDeadlineExceeded) {
  const int lfd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(lfd, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ASSERT_EQ(::listen(lfd, 4), 0);
  socklen_t len = sizeof(a);
  ::getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len);
  const std::string addr = "127.0.0.1:" + std::to_string(ntohs(a.sin_port));
  std::atomic<bool> stop{false};
  std::thread frozen([&] {
    const int fd = ::accept(lfd, nullptr, nullptr);
    char hdr[16];
    ASSERT_EQ(::recv(fd, hdr, 16, MSG_WAITALL), 16);
    uint32_t n;
    std::memcpy(&n, hdr + 8, 4);
    std::vector<char> body(n);
    if (n > 0) {
      ASSERT_EQ(::recv(fd, body.data(), n, MSG_WAITALL), static_cast<ssize_t>(n));
    }
    // HELLO_OK: magic | u16 type 2 | u16 0 | u32 length 0 | u32 seq 0.
    char reply[16];
    const uint32_t magic = 0x3141564B;
    std::memcpy(reply, &magic, 4);
    const uint16_t type = 2, zero = 0;
    std::memcpy(reply + 4, &type, 2);
    std::memcpy(reply + 6, &zero, 2);
    std::memset(reply + 8, 0, 8);
    ASSERT_EQ(::send(fd, reply, 16, 0), 16);
    while (!stop) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ::close(fd);
  });
  {
    TcpAttentionLink link("w", [&] { return addr; }, "", kShape, std::chrono::milliseconds(300));
    std::mt19937 rng(5);
    const StepData s = MakeStep(&rng, 0, 1);
    std::vector<float> o(kShape.q_dim()), lse(kShape.num_heads);
    const auto t0 = std::chrono::steady_clock::now();
    const absl::Status st = LinkStep(link, 0, ItemOf(s), o.data(), lse.data());
    const auto waited = std::chrono::steady_clock::now() - t0;
    EXPECT_EQ(st.code(), absl::StatusCode::kDeadlineExceeded) << st;
    EXPECT_GE(waited, std::chrono::milliseconds(250));
    EXPECT_LT(waited, std::chrono::seconds(2));
  }
  stop = true;
  frozen.join();
  ::close(lfd);
}

TEST(AttentionTcp, MalformedFramesCloseOnlyTheirConnection) {
  Worker w;
  const std::string addr = w.address();
  TcpAttentionLink link("w", [&] { return addr; }, "s3cret", kShape, std::chrono::seconds(2));
  std::mt19937 rng(6);
  const StepData s = MakeStep(&rng, 0, 1);
  std::vector<float> o(kShape.q_dim()), lse(kShape.num_heads);
  ASSERT_TRUE(LinkStep(link, 0, ItemOf(s), o.data(), lse.data()).ok());
  // Garbage instead of a HELLO; then a HELLO without the secret.
  for (int round = 0; round < 2; ++round) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(w.port));
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    if (round == 0) {
      const char junk[64] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
      ASSERT_EQ(::send(fd, junk, sizeof(junk), 0), static_cast<ssize_t>(sizeof(junk)));
    } else {
      char hello[16] = {};
      const uint32_t magic = 0x3141564B;
      const uint16_t type = 1;
      std::memcpy(hello, &magic, 4);
      std::memcpy(hello + 4, &type, 2);
      ASSERT_EQ(::send(fd, hello, 16, 0), 16);
    }
    // The worker answers with an ERROR frame (or nothing) and closes.
    char buf[512];
    ssize_t r;
    size_t total = 0;
    while ((r = ::recv(fd, buf, sizeof(buf), 0)) > 0) total += static_cast<size_t>(r);
    EXPECT_LE(r, 0);  // closed (a reset when junk was left unread)
    EXPECT_LT(total, sizeof(buf));
    ::close(fd);
  }
  // The established connection keeps working.
  const StepData s2 = MakeStep(&rng, 1, 1);
  EXPECT_TRUE(LinkStep(link, 0, ItemOf(s2), o.data(), lse.data()).ok());
}

// Through GrpcAttentionLinks, as a decoder links: the worker's advertised data port is used, and
// a worker that advertises none is reached over gRPC; both give the shard's bits.
TEST(AttentionTcp, DecoderLinksUseTheAdvertisedPortOrFallBackToGrpc) {
  const GrpcAuth auth("s3cret", "cluster secret");
  std::mt19937 rng(8);
  const StepData s = MakeStep(&rng, 0, 3);
  const ShardItem it = ItemOf(s);
  CpuBackend backend(1);
  AttentionShard direct(kShape, 4, 256, &backend);
  ASSERT_TRUE(direct.AllocateSegment(kKey, 0, 64).ok());
  std::vector<float> want_o(3 * kShape.q_dim()), want_lse(3 * kShape.num_heads);
  ASSERT_TRUE(direct.Step(0, std::span<const ShardItem>(&it, 1), want_o.data(),
                          want_lse.data()).ok());
  for (const bool advertise : {true, false}) {
    Worker w;
    AttentionGrpcServices services(&w.shard, auth, advertise ? w.port : 0);
    GrpcServer server;
    auto port = server.Start("127.0.0.1", 0, services.services());
    ASSERT_TRUE(port.ok()) << port.status();
    GrpcAttentionLinks links(kShape, auth, std::chrono::seconds(5));
    auto link = links.Get("127.0.0.1:" + std::to_string(*port));
    ASSERT_TRUE(link.ok()) << link.status();
    std::vector<float> o(3 * kShape.q_dim()), lse(3 * kShape.num_heads);
    std::promise<absl::Status> p;
    (*link)->Step(0, std::span<const ShardItem>(&it, 1), 3, o.data(), lse.data(),
                  [&](absl::Status st) { p.set_value(std::move(st)); });
    (*link)->Collect();
    ASSERT_TRUE(p.get_future().get().ok()) << "advertise " << advertise;
    EXPECT_EQ(o, want_o);
    EXPECT_EQ(lse, want_lse);
    EXPECT_EQ(w.server.steps_served(), advertise ? 1 : 0);
    server.Stop();
  }
}

}  // namespace
}  // namespace kvasir::transport

// The attention data plane over raw TCP: one long-lived connection per (decoder, attention
// worker), framed requests and replies, instead of a gRPC call per layer. The worker runs
// AttentionTcpServer next to its gRPC services and advertises the port in AttentionControl.Info
// (data_port); the decoder's link (GrpcAttentionLinks, attention_grpc.h) asks for it and
// connects, and falls back to gRPC AttentionData.Step when a worker advertises none.
//
// Framing (all little-endian). Every frame is a 16-byte header then `length` payload bytes:
//   u32 magic 0x3141564B ("KVA1") | u16 type | u16 reserved | u32 length | u32 seq
// The client numbers its requests (seq); the server answers each, in order, with the same seq.
//   HELLO     (1) client -> server, first frame: "Bearer " + cluster secret (may be empty when
//                 the cluster is open). Answered by HELLO_OK (2), or ERROR and the connection
//                 closed.
//   STEP      (3) i32 layer | i32 num_items | u32 dtype (0: fp32, 1: bf16) | u32 reserved |
//                 num_items x { i64 segment_key | i32 q_start | i32 num_queries | i32 num_append
//                 | i32 reserved } | per item, in order: q [n, H*d], k [a, KVH*d], v [a, KVH*d]
//                 in dtype, rows packed.
//   STEP_REPLY(4) o [rows, H*d] in the request's dtype | lse [rows, H] fp32, rows = sum of n.
//   ERROR     (5) i32 absl::StatusCode | message bytes. A STEP's error keeps the connection; a
//                 malformed frame closes it.
// Payloads are at most 1 GiB. A STEP carries the same tensors as the gRPC AttentionStepRequest
// (proto/kvasir/v1/attention.proto); with bf16 they take half the bytes (q, k, v and o are
// rounded to bf16; lse stays fp32).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "attention/attention_shard.h"
#include "attention/distributed_attention.h"
#include "common/status.h"

namespace kvasir::transport {

enum class WireDType : uint32_t { kF32 = 0, kBF16 = 1 };

// Serves AttentionShard::Step to decoders over TCP. Thread per connection (a worker has a
// handful of decoders); Step calls from different connections run concurrently, as the shard
// allows.
class AttentionTcpServer {
 public:
  // `secret`: the cluster secret a HELLO must carry (empty: any caller).
  AttentionTcpServer(AttentionShard* shard, std::string secret);
  ~AttentionTcpServer();
  AttentionTcpServer(const AttentionTcpServer&) = delete;
  AttentionTcpServer& operator=(const AttentionTcpServer&) = delete;

  // Listens on host:port (0: a free one); returns the bound port.
  absl::StatusOr<int> Start(const std::string& host, int port);
  // Closes the listener and every connection, joins their threads.
  void Stop();
  // STEP frames answered so far (errors included).
  int64_t steps_served() const { return steps_served_.load(std::memory_order_relaxed); }

 private:
  struct Conn {
    int fd = -1;
    std::thread thread;
    bool done = false;
  };
  void AcceptLoop();
  void Serve(Conn* conn);

  AttentionShard* const shard_;
  const std::string secret_;
  int listen_fd_ = -1;
  std::thread acceptor_;
  std::atomic<int64_t> steps_served_{0};
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::unique_ptr<Conn>> conns_ ABSL_GUARDED_BY(mu_);
};

// A decoder's link to one worker's TCP data plane. Step sends the request at once and returns;
// Collect, on the same thread, reads the replies and completes the requests (so a layer's steps
// to all workers are on the wire together, and a reply reaches the waiting thread directly). A
// request without a reply within `timeout` fails with DEADLINE_EXCEEDED and the connection is
// dropped (a frozen worker); a closed or refused connection fails with UNAVAILABLE. The next
// Step reconnects, asking `resolve` for the data address again (a restarted worker listens on a
// new port). One caller at a time (the decoder's engine thread).
class TcpAttentionLink : public AttentionLink {
 public:
  // `resolve`: the worker's data-plane "host:port" (its control service's answer).
  TcpAttentionLink(std::string name, std::function<absl::StatusOr<std::string>()> resolve,
                   std::string secret, AttentionShape shape, std::chrono::milliseconds timeout,
                   WireDType dtype = WireDType::kF32);
  ~TcpAttentionLink() override;

  void Step(int32_t layer, std::span<const ShardItem> items, int64_t rows, float* o, float* lse,
            std::function<void(absl::Status)> done) override;
  void Collect() override;

  // Bytes of the last request and reply frames (headers included), for tests and benchmarks.
  std::pair<int64_t, int64_t> last_frame_bytes() const {
    absl::MutexLock lock(&mu_);
    return {last_sent_, last_received_};
  }

 private:
  struct Pending {
    uint32_t seq = 0;
    int64_t rows = 0;
    float* o = nullptr;
    float* lse = nullptr;
    std::function<void(absl::Status)> done;
    std::chrono::steady_clock::time_point deadline;
  };
  // A connected, greeted socket, or why not.
  absl::StatusOr<int> Connect();
  // Closes the connection and fails every pending request with `st`.
  void Drop(const absl::Status& st);

  const std::string name_;
  const std::function<absl::StatusOr<std::string>()> resolve_;
  const std::string secret_;
  const AttentionShape shape_;
  const std::chrono::milliseconds timeout_;
  const WireDType dtype_;

  // The engine thread is the only caller; the lock keeps the accessors and sanitizers honest.
  mutable absl::Mutex mu_;
  int fd_ ABSL_GUARDED_BY(mu_) = -1;
  uint32_t next_seq_ ABSL_GUARDED_BY(mu_) = 1;
  std::deque<Pending> pending_ ABSL_GUARDED_BY(mu_);
  std::vector<char> frame_ ABSL_GUARDED_BY(mu_);    // the request being built
  std::vector<char> payload_ ABSL_GUARDED_BY(mu_);  // the reply being read
  int64_t last_sent_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t last_received_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace kvasir::transport

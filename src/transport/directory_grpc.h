// The router's KV manager across processes: KvDirectoryHost adapts router/kv_manager.h to the
// kvasir.v1.KvDirectory service (for decoders) and reaches the attention workers' pools through
// their AttentionControl service; decoders reach it through GrpcSegmentDirectory. Protobuf
// stays here: the manager sees only native types.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "attention/distributed_attention.h"
#include "router/kv_manager.h"
#include "scheduler/clock.h"
#include "transport/grpc_auth.h"
#include "transport/grpc_server.h"

namespace kvasir::transport {

class KvDirectoryHost {
 public:
  // `auth`: the cluster secret, checked on the KvDirectory service and sent to the workers.
  KvDirectoryHost(std::vector<std::string> attention_addresses, AttentionShape expected,
                  GrpcAuth auth = {});
  ~KvDirectoryHost();

  // Waits (up to `timeout`) for every attention worker to answer Info, checks that its shapes
  // match the model, and registers its pool. Fails naming the worker that is missing or wrong.
  // Call before serving service().
  absl::Status Connect(std::chrono::milliseconds timeout);
  grpc::Service* service();
  KvUsage Usage();
  // Segments held now (tests, metrics).
  int64_t num_sequences();
  KvManager* manager() { return manager_.get(); }

  // Watches the attention workers and the decoders' leases on a thread of its own, after
  // Connect: a worker that misses `misses` Info calls in a row (period apart, each with that
  // deadline) is down (KvManager::PoolDown: its sequences are recomputed elsewhere); one that
  // answers again rejoins, after its stale segments are freed. A decoder silent for `lease` is
  // dead: its blocks are freed.
  struct MonitorOptions {
    std::chrono::milliseconds period{500};
    int misses = 3;
    std::chrono::milliseconds lease{10000};
  };
  void StartMonitor(MonitorOptions options);
  void StartMonitor() { StartMonitor(MonitorOptions{}); }
  void StopMonitor();

 private:
  void MonitorOnce(const MonitorOptions& o, std::vector<int>& misses);
  class Service;
  class Pool;
  friend class Service;

  std::vector<std::string> addresses_;
  AttentionShape expected_;
  const GrpcAuth auth_;
  sched::SystemClock clock_;
  std::vector<std::unique_ptr<Pool>> pools_;
  std::unique_ptr<KvManager> manager_;  // set by Connect
  std::unique_ptr<Service> service_;
  absl::Mutex monitor_mu_;
  bool stop_monitor_ ABSL_GUARDED_BY(monitor_mu_) = false;
  std::thread monitor_;
};

class GrpcSegmentDirectory : public SegmentDirectory {
 public:
  // `auth`: the cluster secret sent with every call to the router. `key_prefix`: this
  // decoder's id (the high bits of its sequence keys).
  explicit GrpcSegmentDirectory(const std::string& router_address, const GrpcAuth& auth = {},
                                int64_t key_prefix = 0);
  // Tells the router this decoder (re)started, so what an earlier incarnation held is freed,
  // and renews the decoder's lease every `heartbeat` on a thread of its own until destroyed.
  void Start(std::chrono::milliseconds heartbeat = std::chrono::milliseconds(1000));
  ~GrpcSegmentDirectory() override;

  absl::StatusOr<std::vector<SegmentPlacement>> Allocate(int64_t seq_key, int64_t tokens,
                                                         int64_t priority) override;
  absl::StatusOr<std::vector<SegmentPlacement>> Extend(int64_t seq_key, int64_t tokens,
                                                       int64_t priority) override;
  void Free(int64_t seq_key) override;
  std::pair<int64_t, int32_t> BlockShape() override;
  int64_t MaxTokens() override;
  int64_t MaxTokensAllUp() override;
  KvUsage Usage() override;
  // Orders come with every reply; when none came for a while (a decoder waiting for blocks
  // makes no successful calls), asks the router (at most every 20 ms).
  std::vector<int64_t> TakePreemptions(int64_t key_prefix) override;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvasir::transport

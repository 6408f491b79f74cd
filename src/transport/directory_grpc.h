// The router's KV manager across processes: KvDirectoryHost adapts router/kv_manager.h to the
// kvasir.v1.KvDirectory service (for decoders) and reaches the attention workers' pools through
// their AttentionControl service; decoders reach it through GrpcSegmentDirectory. Protobuf
// stays here: the manager sees only native types.
#pragma once

#include <chrono>
#include <memory>
#include <string>
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

 private:
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
};

class GrpcSegmentDirectory : public SegmentDirectory {
 public:
  // `auth`: the cluster secret sent with every call to the router.
  explicit GrpcSegmentDirectory(const std::string& router_address, const GrpcAuth& auth = {});
  ~GrpcSegmentDirectory() override;

  absl::StatusOr<std::vector<SegmentPlacement>> Allocate(int64_t seq_key, int64_t tokens,
                                                         int64_t priority) override;
  absl::StatusOr<std::vector<SegmentPlacement>> Extend(int64_t seq_key, int64_t tokens,
                                                       int64_t priority) override;
  void Free(int64_t seq_key) override;
  std::pair<int64_t, int32_t> BlockShape() override;
  int64_t MaxTokens() override;
  KvUsage Usage() override;
  // Orders come with every reply; when none came for a while (a decoder waiting for blocks
  // makes no successful calls), asks the router (at most every 20 ms).
  std::vector<int64_t> TakePreemptions(int64_t key_prefix) override;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvasir::transport

// Router <-> decoder worker control over gRPC (kvasir.v1.Decoder): the decoder's service over
// its Engine, and RemoteDecoders, the router's EngineHandle that places each request on the
// least-loaded healthy decoder (scheduler/placement.h) and relays its token events.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "decoder/engine.h"
#include "attention/attention_executor.h"
#include "scheduler/placement.h"
#include "transport/grpc_auth.h"
#include "transport/grpc_server.h"

namespace kvasir::transport {

class DecoderGrpcService {
 public:
  // `auth`: the cluster secret every call must carry (open when empty).
  explicit DecoderGrpcService(Engine* engine, GrpcAuth auth = {});
  ~DecoderGrpcService();
  grpc::Service* service();

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

class RemoteDecoders : public EngineHandle {
 public:
  // kv_usage reports the cluster's KV blocks (the router's directory).
  // `migration_limit`: how many times a stream whose decoder dies mid-request is resumed on
  // another decoder from the tokens already sent (0: it ends with an error).
  RemoteDecoders(std::vector<std::string> addresses, ModelConfig config,
                 std::unique_ptr<sched::PlacementPolicy> policy,
                 std::function<KvUsage()> kv_usage, const GrpcAuth& auth = {},
                 int migration_limit = 3);
  int64_t migrations_total() const { return migrations_total_.load(); }
  ~RemoteDecoders() override;

  absl::Status Submit(EngineRequest request) override;
  void Cancel(uint64_t id) override;
  EngineStats stats() const override;
  const ModelConfig& model_config() const override { return config_; }
  bool healthy() const override;
  // Empty while every decoder answers its health poll; else which do not, for /health.
  std::string Unreachable() const;

  // Polls every decoder's Stats (health) now and then every `period` in the background.
  void Start(std::chrono::milliseconds period = std::chrono::milliseconds(200));
  void Stop();

 private:
  class Call;
  struct Decoder;
  void Poll();
  void Finished(uint64_t id, size_t decoder, int64_t tokens);
  // Places `request` on a healthy decoder not in `tried` and waits for its acknowledgement.
  absl::Status Place(EngineRequest request, std::vector<bool> tried, int migrations);
  // Resumes a stream whose decoder died, on the migration thread.
  void Migrate(EngineRequest request, size_t dead_decoder, int migrations);
  void MigrationLoop();

  const ModelConfig config_;
  std::function<KvUsage()> kv_usage_;
  std::vector<std::unique_ptr<Decoder>> decoders_;
  mutable std::mutex mu_;
  std::unique_ptr<sched::PlacementPolicy> policy_;
  std::unordered_map<uint64_t, Call*> calls_;  // in flight, owned by gRPC until OnDone
  std::condition_variable idle_;
  std::atomic<bool> stop_{false};
  std::thread poller_;
  std::mutex poll_mu_;
  std::condition_variable poll_cv_;

  const int migration_limit_;
  struct Migration {
    EngineRequest request;
    size_t dead_decoder;
    int migrations;  // this one included
  };
  std::mutex migrate_mu_;
  std::condition_variable migrate_cv_;
  std::deque<Migration> migrations_;  // guarded by migrate_mu_
  std::thread migrator_;
  std::atomic<int64_t> migrations_total_{0};
};

}  // namespace kvasir::transport

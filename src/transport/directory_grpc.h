// The KV directory across processes. The router hosts it (KvDirectoryHost: the
// kvasir.v1.KvDirectory service, allocating segments on attention workers through their
// AttentionControl service); decoders reach it through GrpcSegmentDirectory.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "attention/distributed_attention.h"
#include "kvcache/kv_directory.h"
#include "model/local_attention.h"
#include "transport/grpc_server.h"

namespace kvasir::transport {

class KvDirectoryHost {
 public:
  KvDirectoryHost(std::vector<std::string> attention_addresses, AttentionShape expected);
  ~KvDirectoryHost();

  // Waits (up to `timeout`) for every attention worker to answer Info, checks that its shapes
  // match the model, and registers its pool. Fails naming the worker that is missing or wrong.
  absl::Status Connect(std::chrono::milliseconds timeout);
  grpc::Service* service();
  KvUsage Usage();
  // Segments held now (tests, metrics).
  int64_t num_sequences();

 private:
  class Service;
  friend class Service;
  struct Worker;
  absl::StatusOr<std::vector<SegmentPlacement>> Allocate(int64_t seq_key, int64_t tokens);
  absl::StatusOr<std::vector<SegmentPlacement>> Extend(int64_t seq_key, int64_t tokens);
  void Free(int64_t seq_key);
  std::vector<SegmentPlacement> Placements(int64_t seq_key);  // requires mu_
  // Marks a worker dead after a transport failure.
  void NoteFailure(int32_t worker, const grpc::Status& s);
  void FillInfo(void* info_proto);

  std::vector<std::string> addresses_;
  AttentionShape expected_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::mutex mu_;
  std::unique_ptr<KvDirectory> directory_;
  std::unique_ptr<Service> service_;
};

class GrpcSegmentDirectory : public SegmentDirectory {
 public:
  explicit GrpcSegmentDirectory(const std::string& router_address);
  ~GrpcSegmentDirectory() override;

  absl::StatusOr<std::vector<SegmentPlacement>> Allocate(int64_t seq_key,
                                                         int64_t tokens) override;
  absl::StatusOr<std::vector<SegmentPlacement>> Extend(int64_t seq_key,
                                                       int64_t tokens) override;
  void Free(int64_t seq_key) override;
  std::pair<int64_t, int32_t> BlockShape() override;
  int64_t MaxTokens() override;
  KvUsage Usage() override;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvasir::transport

// The attention worker over gRPC: its services (AttentionData.Step for the data plane,
// AttentionControl for the router's segment allocation) and the decoder's data-plane link.
// The data plane runs over the worker's TCP data port when it advertises one
// (AttentionControl.Info data_port; framing in attention_tcp.h: one long-lived connection per
// decoder and worker), else one unary gRPC Step per layer per step per worker
// (kvasir/v1/attention.proto).
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "attention/attention_shard.h"
#include "attention/distributed_attention.h"
#include "transport/attention_tcp.h"
#include "transport/grpc_auth.h"
#include "transport/grpc_server.h"

namespace kvasir::transport {

class AttentionGrpcServices {
 public:
  // `auth`: the cluster secret every call must carry (open when empty). `data_port`: the
  // worker's TCP data plane (AttentionTcpServer) that Info advertises; 0: none.
  explicit AttentionGrpcServices(AttentionShard* shard, GrpcAuth auth = {}, int data_port = 0);
  ~AttentionGrpcServices();
  std::vector<grpc::Service*> services();

 private:
  class Data;
  class Control;
  std::unique_ptr<Data> data_;
  std::unique_ptr<Control> control_;
};

struct DataPlaneOptions {
  bool tcp = true;  // the worker's TCP data port when it has one; false: always gRPC
  WireDType dtype = WireDType::kF32;  // q, k, v, o on the TCP wire (lse stays fp32)
};

// Links to attention workers by address, one channel each, made on first use. Thread-safe.
class GrpcAttentionLinks {
 public:
  // `auth`: the cluster secret sent with every Step.
  // `step_timeout`: the deadline of one Step (a frozen worker fails the step after it, and the
  // engine recomputes the sequences it held elsewhere).
  explicit GrpcAttentionLinks(AttentionShape shape, GrpcAuth auth = {},
                              std::chrono::milliseconds step_timeout = std::chrono::seconds(10),
                              DataPlaneOptions plane = {});
  ~GrpcAttentionLinks();
  absl::StatusOr<AttentionLink*> Get(const std::string& address);
  LinkResolver Resolver() {
    return [this](const std::string& a) { return Get(a); };
  }

 private:
  class Link;
  const AttentionShape shape_;
  const GrpcAuth auth_;
  const std::chrono::milliseconds step_timeout_;
  const DataPlaneOptions plane_;
  std::mutex mu_;
  std::unordered_map<std::string, std::unique_ptr<Link>> links_;
};

}  // namespace kvasir::transport

// gRPC front end: the kvasir.v1.Completion service over the router's CompletionService, plus
// the standard grpc.health.v1 health service and server reflection. The only place (with its
// .cc) where Completion protobuf types meet the native request types.
#pragma once

#include <memory>
#include <string>

#include "common/status.h"
#include "router/completion_service.h"

#include "transport/grpc_auth.h"
#include "transport/grpc_server.h"

namespace kvasir::transport {

class CompletionGrpcServer {
 public:
  // `auth`: the API key every Generate call must carry (open when empty).
  explicit CompletionGrpcServer(CompletionService* service, GrpcAuth auth = {});
  ~CompletionGrpcServer();

  // Listens on host:port (0 picks a free port); returns the bound port.
  absl::StatusOr<int> Start(const std::string& host, int port);
  void Stop();
  // The service alone, to share a server with other services (the router's gRPC port).
  grpc::Service* service();

 private:
  class Impl;
  CompletionService* service_;
  std::unique_ptr<Impl> impl_;
  GrpcServer server_;
};

}  // namespace kvasir::transport

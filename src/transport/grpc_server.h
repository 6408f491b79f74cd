// One place that starts a gRPC server for Kvasir's services: listening address, the standard
// grpc.health.v1 health service and server reflection on every server, status conversion.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "common/status.h"

namespace kvasir::transport {

class GrpcServer {
 public:
  ~GrpcServer() { Stop(); }
  // Registers `services` (not owned; they must outlive the server) and listens on host:port
  // (0: a free port). Returns the bound port.
  absl::StatusOr<int> Start(const std::string& host, int port,
                            const std::vector<grpc::Service*>& services);
  // Marks the health service SERVING / NOT_SERVING.
  void SetServing(bool serving);
  void Stop();
  grpc::Server* server() { return server_.get(); }

 private:
  std::unique_ptr<grpc::Server> server_;
};

grpc::Status ToGrpcStatus(const absl::Status& s);
absl::Status FromGrpcStatus(const grpc::Status& s, const std::string& what);

}  // namespace kvasir::transport

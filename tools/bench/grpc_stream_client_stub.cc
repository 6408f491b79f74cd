// Built when the generated Kvasir protos (target kvasir_proto) are not available.
#include "tools/bench/grpc_stream_client.h"

namespace kvasir::bench {
namespace {

absl::Status NoGrpc() {
  return absl::UnimplementedError(
      "this kvasir-bench was built without Kvasir's gRPC protos (proto/, target kvasir_proto); "
      "backend kvasir-grpc is not available, use --backend openai or openai-chat");
}

}  // namespace

absl::StatusOr<RunResult> RunGrpcStreamingRequests(const std::vector<HttpJob>&,
                                                   const GrpcClientOptions&) {
  return NoGrpc();
}

absl::Status GenerateRequestFromBody(std::string_view, v1::GenerateRequest*) { return NoGrpc(); }

absl::StatusOr<std::string> GrpcTargetFromUrl(std::string_view, bool*) { return NoGrpc(); }

}  // namespace kvasir::bench

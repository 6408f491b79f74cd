// Bearer-token authentication of gRPC calls: metadata "authorization: Bearer TOKEN", the same
// header as on HTTP. Two tokens exist: the API key (clients -> the Completion service) and the
// cluster secret (between the roles: Decoder, KvDirectory, AttentionControl, AttentionData).
// The standard health and reflection services stay open, as /health and /metrics do on HTTP.
//
// Servers check the token at the top of every handler (gRPC C++ server interceptors cannot end
// a call with a status of their own); clients attach it to every call of a channel made by
// AuthChannel, through a client interceptor, so no call site can forget it.
#pragma once

#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

namespace kvasir::transport {

class GrpcAuth {
 public:
  GrpcAuth() = default;  // open: every call accepted, nothing attached
  // `what` names the token in errors: "API key", "cluster secret". An empty token is open.
  GrpcAuth(std::string token, std::string what);

  bool enabled() const { return !token_.empty(); }
  // OK, or UNAUTHENTICATED naming what is missing. Constant-time in the token.
  grpc::Status Check(const grpc::ServerContextBase& ctx) const;
  const std::string& token() const { return token_; }

 private:
  std::string token_;
  std::string what_ = "token";
};

// A channel to `target` whose every call carries `auth`'s token (none when it is open), and
// that reconnects within a second when its peer comes (back) up.
std::shared_ptr<grpc::Channel> AuthChannel(const std::string& target, const GrpcAuth& auth,
                                           const grpc::ChannelArguments& args = {});

// Ends a handler with UNAUTHENTICATED when the call does not carry `auth`'s token.
#define KVASIR_GRPC_CHECK_AUTH(auth, ctx)                          \
  do {                                                             \
    if (grpc::Status _auth_status = (auth).Check(*(ctx));          \
        !_auth_status.ok()) {                                      \
      return _auth_status;                                         \
    }                                                              \
  } while (0)

}  // namespace kvasir::transport

#include "transport/grpc_auth.h"

#include <grpcpp/support/client_interceptor.h>

#include <string_view>
#include <vector>

#include "common/secret.h"

namespace kvasir::transport {

namespace {

constexpr char kAuthorization[] = "authorization";

class BearerInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit BearerInterceptor(const std::string* header) : header_(header) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* m) override {
    if (m->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      m->GetSendInitialMetadata()->emplace(kAuthorization, *header_);
    }
    m->Proceed();
  }

 private:
  const std::string* header_;  // owned by the factory, which the channel keeps
};

class BearerInterceptorFactory final
    : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit BearerInterceptorFactory(std::string header) : header_(std::move(header)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo*) override {
    return new BearerInterceptor(&header_);
  }

 private:
  const std::string header_;
};

}  // namespace

GrpcAuth::GrpcAuth(std::string token, std::string what)
    : token_(std::move(token)), what_(std::move(what)) {}

grpc::Status GrpcAuth::Check(const grpc::ServerContextBase& ctx) const {
  if (token_.empty()) return grpc::Status::OK;
  const auto& md = ctx.client_metadata();
  auto range = md.equal_range(kAuthorization);
  if (range.first == range.second) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "missing " + what_ + " (metadata authorization: Bearer ...)");
  }
  bool ok = false;
  for (auto it = range.first; it != range.second; ++it) {
    ok |= BearerMatches(std::string_view(it->second.data(), it->second.size()), token_);
  }
  if (!ok) return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "invalid " + what_);
  return grpc::Status::OK;
}

std::shared_ptr<grpc::Channel> AuthChannel(const std::string& target, const GrpcAuth& auth,
                                           const grpc::ChannelArguments& base) {
  // Reconnect within a second: a peer that starts after us, or restarts, is back in use at
  // once (gRPC's default backoff grows to two minutes, calls failing fast meanwhile).
  grpc::ChannelArguments args = base;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  if (!auth.enabled()) {
    return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
  }
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> factories;
  factories.push_back(std::make_unique<BearerInterceptorFactory>(
      std::string(kBearerPrefix) + auth.token()));
  return grpc::experimental::CreateCustomChannelWithInterceptors(
      target, grpc::InsecureChannelCredentials(), args, std::move(factories));
}

}  // namespace kvasir::transport

#include "transport/directory_grpc.h"

#include <atomic>
#include <chrono>
#include <thread>

#include "common/logging.h"
#include "kvasir/v1/worker.grpc.pb.h"

namespace kvasir::transport {

namespace {

std::chrono::system_clock::time_point In(std::chrono::milliseconds d) {
  return std::chrono::system_clock::now() + d;
}

constexpr std::chrono::milliseconds kPoolDeadline{5000};
// An Info request that takes no decoder's preemption orders (no key has a negative prefix).
constexpr int64_t kNoOrders = -1;

}  // namespace

// An attention worker's pool through its AttentionControl service.
class KvDirectoryHost::Pool : public KvPoolClient {
 public:
  Pool(std::string address, const GrpcAuth& auth)
      : address_(std::move(address)),
        stub_(v1::AttentionControl::NewStub(AuthChannel(address_, auth))) {}

  // Info, waiting for the worker to come up.
  absl::StatusOr<v1::AttentionInfo> Info(std::chrono::milliseconds deadline) {
    grpc::ClientContext ctx;
    ctx.set_deadline(In(deadline));
    v1::AttentionInfo info;
    grpc::Status s = stub_->Info(&ctx, v1::AttentionInfoRequest(), &info);
    if (!s.ok()) return FromGrpcStatus(s, "attention worker " + address_);
    return info;
  }

  absl::StatusOr<v1::AttentionInfo> WaitForInfo(std::chrono::steady_clock::time_point until) {
    while (true) {
      grpc::ClientContext ctx;
      ctx.set_deadline(In(std::chrono::milliseconds(1000)));
      ctx.set_wait_for_ready(true);
      v1::AttentionInfo info;
      grpc::Status s = stub_->Info(&ctx, v1::AttentionInfoRequest(), &info);
      if (s.ok()) return info;
      if (s.error_code() == grpc::StatusCode::UNAUTHENTICATED) {
        return absl::UnauthenticatedError(absl::StrCat(
            "attention worker ", address_, " refused the cluster secret: ", s.error_message()));
      }
      if (std::chrono::steady_clock::now() > until) {
        return absl::UnavailableError(
            absl::StrCat("attention worker ", address_, " did not answer: ", s.error_message()));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }

  absl::Status AllocateSegment(int64_t key, int32_t base, int32_t capacity) override {
    grpc::ClientContext ctx;
    ctx.set_deadline(In(kPoolDeadline));
    v1::AllocateSegmentRequest r;
    r.set_key(key);
    r.set_base(base);
    r.set_capacity(capacity);
    v1::AllocateSegmentReply reply;
    return FromGrpcStatus(stub_->AllocateSegment(&ctx, r, &reply), "");
  }
  absl::Status ExtendSegment(int64_t key, int32_t capacity) override {
    grpc::ClientContext ctx;
    ctx.set_deadline(In(kPoolDeadline));
    v1::ExtendSegmentRequest r;
    r.set_key(key);
    r.set_capacity(capacity);
    v1::AllocateSegmentReply reply;
    return FromGrpcStatus(stub_->ExtendSegment(&ctx, r, &reply), "");
  }
  absl::Status FreeSegment(int64_t key) override {
    grpc::ClientContext ctx;
    ctx.set_deadline(In(kPoolDeadline));
    v1::FreeSegmentRequest r;
    r.set_key(key);
    v1::FreeSegmentReply reply;
    return FromGrpcStatus(stub_->FreeSegment(&ctx, r, &reply), "");
  }

 private:
  const std::string address_;
  std::unique_ptr<v1::AttentionControl::Stub> stub_;
};

class KvDirectoryHost::Service final : public v1::KvDirectory::Service {
 public:
  explicit Service(KvDirectoryHost* host) : host_(host) {}

  grpc::Status Allocate(grpc::ServerContext* ctx, const v1::AllocateRequest* r,
                        v1::AllocateReply* out) override {
    KVASIR_GRPC_CHECK_AUTH(host_->auth_, ctx);
    KvManager* m = host_->manager();
    if (m == nullptr) return NotConnected();
    return Reply(m->Allocate(r->seq_key(), r->tokens(), r->priority()), r->seq_key(), out);
  }
  grpc::Status Extend(grpc::ServerContext* ctx, const v1::AllocateRequest* r,
                      v1::AllocateReply* out) override {
    KVASIR_GRPC_CHECK_AUTH(host_->auth_, ctx);
    KvManager* m = host_->manager();
    if (m == nullptr) return NotConnected();
    return Reply(m->Extend(r->seq_key(), r->tokens(), r->priority()), r->seq_key(), out);
  }
  grpc::Status Free(grpc::ServerContext* ctx, const v1::FreeRequest* r, v1::FreeReply* out) override {
    KVASIR_GRPC_CHECK_AUTH(host_->auth_, ctx);
    KvManager* m = host_->manager();
    if (m == nullptr) return NotConnected();
    m->Free(r->seq_key());
    FillInfo(m, r->seq_key() >> kSeqKeyBits, out->mutable_info());
    return grpc::Status::OK;
  }
  grpc::Status Info(grpc::ServerContext* ctx, const v1::DirectoryInfoRequest* r,
                    v1::DirectoryInfo* out) override {
    KVASIR_GRPC_CHECK_AUTH(host_->auth_, ctx);
    KvManager* m = host_->manager();
    if (m == nullptr) return NotConnected();
    if (r->restart() && r->key_prefix() >= 0) {
      const int64_t n = m->FreeDecoder(r->key_prefix());
      SPDLOG_INFO("decoder {} (re)started: {} sequence(s) of its previous run freed",
                  r->key_prefix(), n);
    }
    FillInfo(m, r->key_prefix(), out);
    return grpc::Status::OK;
  }

 private:
  static grpc::Status NotConnected() {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the KV directory is not connected yet");
  }
  static void FillInfo(KvManager* m, int64_t key_prefix, v1::DirectoryInfo* info) {
    const KvUsage u = m->Usage();
    const auto [per, bs] = m->BlockShape();
    info->set_max_tokens(m->MaxTokens());
    info->set_max_tokens_all_up(m->MaxTokensAllUp());
    info->set_blocks_total(u.blocks_total);
    info->set_blocks_used(u.blocks_used);
    info->set_workers_alive(m->num_pools_alive());
    info->set_blocks_per_token_block(per);
    info->set_block_size(bs);
    for (int64_t key : m->TakePreemptions(key_prefix)) info->add_preempt(key);
  }
  grpc::Status Reply(const absl::StatusOr<std::vector<SegmentPlacement>>& segs, int64_t seq_key,
                     v1::AllocateReply* out) {
    if (!segs.ok()) return ToGrpcStatus(segs.status());
    for (const SegmentPlacement& s : *segs) {
      v1::Segment* m = out->add_segments();
      m->set_worker(s.worker);
      m->set_base(s.base);
      m->set_capacity(s.capacity);
    }
    FillInfo(host_->manager(), seq_key >> kSeqKeyBits, out->mutable_info());
    return grpc::Status::OK;
  }

  KvDirectoryHost* host_;
};

KvDirectoryHost::KvDirectoryHost(std::vector<std::string> attention_addresses,
                                 AttentionShape expected, GrpcAuth auth)
    : addresses_(std::move(attention_addresses)),
      expected_(expected),
      auth_(std::move(auth)),
      service_(std::make_unique<Service>(this)) {}

KvDirectoryHost::~KvDirectoryHost() { StopMonitor(); }

grpc::Service* KvDirectoryHost::service() { return service_.get(); }

absl::Status KvDirectoryHost::Connect(std::chrono::milliseconds timeout) {
  if (addresses_.empty()) return absl::InvalidArgumentError("no attention workers given");
  const auto until = std::chrono::steady_clock::now() + timeout;
  std::vector<v1::AttentionInfo> infos;
  for (const std::string& address : addresses_) {
    pools_.push_back(std::make_unique<Pool>(address, auth_));
    ASSIGN_OR_RETURN(v1::AttentionInfo in, pools_.back()->WaitForInfo(until));
    const int32_t block_size = infos.empty() ? in.block_size() : infos[0].block_size();
    if (in.num_layers() != expected_.num_layers || in.num_heads() != expected_.num_heads ||
        in.num_kv_heads() != expected_.num_kv_heads || in.head_dim() != expected_.head_dim ||
        in.block_size() != block_size) {
      return absl::FailedPreconditionError(absl::StrCat(
          "attention worker ", address, " serves another model shape (", in.num_layers(),
          " layers, ", in.num_heads(), "/", in.num_kv_heads(), " heads, dim ", in.head_dim(),
          ", block ", in.block_size(), ")"));
    }
    infos.push_back(std::move(in));
  }
  auto manager = std::make_unique<KvManager>(
      static_cast<int64_t>(expected_.num_layers) * expected_.num_kv_heads, infos[0].block_size(),
      &clock_);
  for (size_t i = 0; i < addresses_.size(); ++i) {
    // Segments left from an earlier router are not known here: count only free blocks.
    manager->AddPool(addresses_[i], infos[i].free_blocks(), pools_[i].get());
    SPDLOG_INFO("attention worker {}: {} blocks of {} tokens", addresses_[i],
                infos[i].num_blocks(), infos[i].block_size());
  }
  manager_ = std::move(manager);
  return absl::OkStatus();
}

void KvDirectoryHost::StartMonitor(MonitorOptions options) {
  if (!manager_ || monitor_.joinable()) return;
  monitor_ = std::thread([this, options] {
    std::vector<int> misses(pools_.size(), 0);
    absl::MutexLock lock(&monitor_mu_);
    while (!stop_monitor_) {
      monitor_mu_.Unlock();
      MonitorOnce(options, misses);
      monitor_mu_.Lock();
      monitor_mu_.AwaitWithTimeout(absl::Condition(&stop_monitor_),
                                   absl::FromChrono(options.period));
    }
  });
}

void KvDirectoryHost::StopMonitor() {
  {
    absl::MutexLock lock(&monitor_mu_);
    stop_monitor_ = true;
  }
  if (monitor_.joinable()) monitor_.join();
}

void KvDirectoryHost::MonitorOnce(const MonitorOptions& o, std::vector<int>& misses) {
  for (size_t i = 0; i < pools_.size(); ++i) {
    const std::string& name = addresses_[i];
    absl::StatusOr<v1::AttentionInfo> info = pools_[i]->Info(o.period);
    const bool alive = manager_->pool_alive(name);
    if (!info.ok()) {
      if (++misses[i] == o.misses && alive) {
        SPDLOG_ERROR("attention worker {} missed {} health checks: {}", name, o.misses,
                     info.status().ToString());
        manager_->PoolDown(name);
      }
      continue;
    }
    misses[i] = 0;
    if (alive) continue;
    // Back: free what it may still hold from before (a frozen worker that resumed), then take
    // its pool as it is now.
    for (int64_t key : manager_->TakeDroppedKeys(name)) (void)pools_[i]->FreeSegment(key);
    info = pools_[i]->Info(o.period);
    if (info.ok()) manager_->PoolUp(name, info->num_blocks(), info->free_blocks());
  }
  for (int64_t prefix : manager_->ExpiredDecoders(absl::FromChrono(o.lease))) {
    const int64_t n = manager_->FreeDecoder(prefix);
    SPDLOG_WARN("decoder {} has not called for {} ms: taken for dead, its {} sequence(s) freed",
                prefix, o.lease.count(), n);
  }
}

KvUsage KvDirectoryHost::Usage() { return manager_ ? manager_->Usage() : KvUsage{}; }

int64_t KvDirectoryHost::num_sequences() { return manager_ ? manager_->num_sequences() : 0; }

// ---------------------------------------------------------------------------------------------

class GrpcSegmentDirectory::Impl {
 public:
  Impl(const std::string& router, const GrpcAuth& auth, int64_t key_prefix)
      : router_(router),
        key_prefix_(key_prefix),
        stub_(v1::KvDirectory::NewStub(AuthChannel(router, auth))) {}
  ~Impl() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    if (heartbeat_.joinable()) heartbeat_.join();
  }

  void Remember(const v1::DirectoryInfo& i) {
    absl::MutexLock lock(&mu_);
    max_tokens_ = i.max_tokens();
    max_tokens_all_up_ = std::max(i.max_tokens(), i.max_tokens_all_up());
    usage_ = {i.blocks_total(), i.blocks_used()};
    if (i.block_size() > 0) shape_ = {i.blocks_per_token_block(), i.block_size()};
    orders_.insert(orders_.end(), i.preempt().begin(), i.preempt().end());
    answered_ = std::chrono::steady_clock::now();
  }
  bool Fetch(int64_t key_prefix, bool restart = false) {
    grpc::ClientContext ctx;
    ctx.set_deadline(In(std::chrono::milliseconds(2000)));
    v1::DirectoryInfoRequest r;
    r.set_key_prefix(key_prefix);
    r.set_restart(restart);
    v1::DirectoryInfo info;
    if (!stub_->Info(&ctx, r, &info).ok()) return false;
    Remember(info);
    return true;
  }
  // Asks the router while the directory's shape is unknown, or (stale) once the last answer
  // is older than a second.
  void FetchIfUnknown(bool refresh_stale = false) {
    {
      absl::MutexLock lock(&mu_);
      const bool stale = std::chrono::steady_clock::now() - fetched_ > std::chrono::seconds(1);
      if (shape_.second > 0 && !(refresh_stale && stale)) return;
      fetched_ = std::chrono::steady_clock::now();
    }
    Fetch(kNoOrders);
  }
  // The restart notice goes before anything else this decoder asks for (and is retried until
  // the router answers), so the router frees what a previous run left before it places new
  // sequences, whose keys may repeat the old ones.
  bool Announce() {
    if (announced_.load()) return true;
    absl::MutexLock lock(&announce_mu_);
    if (!announced_.load() && Fetch(key_prefix_, /*restart=*/true)) announced_ = true;
    return announced_.load();
  }
  absl::StatusOr<std::vector<SegmentPlacement>> Call(bool extend, int64_t seq_key, int64_t tokens,
                                                     int64_t priority) {
    if (started_.load() && !Announce()) {
      return absl::UnavailableError("KV directory at " + router_ + " is unreachable");
    }
    grpc::ClientContext ctx;
    ctx.set_deadline(In(std::chrono::milliseconds(10000)));
    v1::AllocateRequest r;
    r.set_seq_key(seq_key);
    r.set_tokens(tokens);
    r.set_priority(priority);
    v1::AllocateReply reply;
    grpc::Status s = extend ? stub_->Extend(&ctx, r, &reply) : stub_->Allocate(&ctx, r, &reply);
    if (!s.ok()) return FromGrpcStatus(s, "KV directory at " + router_);
    Remember(reply.info());
    std::vector<SegmentPlacement> out;
    for (const v1::Segment& m : reply.segments()) {
      out.push_back({m.worker(), m.base(), m.capacity()});
    }
    return out;
  }

  std::string router_;
  const int64_t key_prefix_;
  std::unique_ptr<v1::KvDirectory::Stub> stub_;
  std::thread heartbeat_;
  std::atomic<bool> started_{false};
  std::atomic<bool> announced_{false};
  absl::Mutex announce_mu_;
  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  int64_t max_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t max_tokens_all_up_ ABSL_GUARDED_BY(mu_) = 0;
  KvUsage usage_ ABSL_GUARDED_BY(mu_);
  std::pair<int64_t, int32_t> shape_ ABSL_GUARDED_BY(mu_){0, 0};
  std::chrono::steady_clock::time_point fetched_ ABSL_GUARDED_BY(mu_){};
  std::chrono::steady_clock::time_point answered_ ABSL_GUARDED_BY(mu_){};
  std::vector<int64_t> orders_ ABSL_GUARDED_BY(mu_);  // preemption orders not taken yet
};

GrpcSegmentDirectory::GrpcSegmentDirectory(const std::string& router_address,
                                           const GrpcAuth& auth, int64_t key_prefix)
    : impl_(std::make_unique<Impl>(router_address, auth, key_prefix)) {}

void GrpcSegmentDirectory::Start(std::chrono::milliseconds heartbeat) {
  Impl* impl = impl_.get();
  impl->started_ = true;
  impl->heartbeat_ = std::thread([impl, heartbeat] {
    absl::MutexLock lock(&impl->mu_);
    while (!impl->stop_) {
      impl->mu_.Unlock();
      const bool announced = impl->Announce();
      if (announced) impl->Fetch(impl->key_prefix_);
      impl->mu_.Lock();
      impl->mu_.AwaitWithTimeout(absl::Condition(&impl->stop_),
                                 absl::FromChrono(announced ? heartbeat
                                                            : std::chrono::milliseconds(100)));
    }
  });
}
GrpcSegmentDirectory::~GrpcSegmentDirectory() = default;

absl::StatusOr<std::vector<SegmentPlacement>> GrpcSegmentDirectory::Allocate(int64_t seq_key,
                                                                             int64_t tokens,
                                                                             int64_t priority) {
  return impl_->Call(false, seq_key, tokens, priority);
}

absl::StatusOr<std::vector<SegmentPlacement>> GrpcSegmentDirectory::Extend(int64_t seq_key,
                                                                           int64_t tokens,
                                                                           int64_t priority) {
  return impl_->Call(true, seq_key, tokens, priority);
}

std::pair<int64_t, int32_t> GrpcSegmentDirectory::BlockShape() {
  impl_->FetchIfUnknown();
  absl::MutexLock lock(&impl_->mu_);
  return impl_->shape_;
}

void GrpcSegmentDirectory::Free(int64_t seq_key) {
  grpc::ClientContext ctx;
  // Short: a decoder shutting down after its router must not hang here.
  ctx.set_deadline(In(std::chrono::milliseconds(2000)));
  v1::FreeRequest r;
  r.set_seq_key(seq_key);
  v1::FreeReply reply;
  grpc::Status s = impl_->stub_->Free(&ctx, r, &reply);
  if (s.ok()) {
    impl_->Remember(reply.info());
  } else {
    SPDLOG_WARN("KV directory at {}: freeing sequence {}: {}", impl_->router_, seq_key,
                s.error_message());
  }
}

int64_t GrpcSegmentDirectory::MaxTokens() {
  impl_->FetchIfUnknown(/*refresh_stale=*/true);
  absl::MutexLock lock(&impl_->mu_);
  return impl_->max_tokens_;
}

int64_t GrpcSegmentDirectory::MaxTokensAllUp() {
  impl_->FetchIfUnknown(/*refresh_stale=*/true);
  absl::MutexLock lock(&impl_->mu_);
  return impl_->max_tokens_all_up_;
}

KvUsage GrpcSegmentDirectory::Usage() {
  impl_->FetchIfUnknown();
  absl::MutexLock lock(&impl_->mu_);
  return impl_->usage_;
}

std::vector<int64_t> GrpcSegmentDirectory::TakePreemptions(int64_t key_prefix) {
  bool ask;
  {
    absl::MutexLock lock(&impl_->mu_);
    ask = std::chrono::steady_clock::now() - impl_->answered_ > std::chrono::milliseconds(20);
  }
  if (ask) impl_->Fetch(key_prefix);
  absl::MutexLock lock(&impl_->mu_);
  std::vector<int64_t> out;
  for (int64_t key : impl_->orders_) {
    if ((key >> kSeqKeyBits) == key_prefix) out.push_back(key);
  }
  impl_->orders_.clear();
  return out;
}

}  // namespace kvasir::transport

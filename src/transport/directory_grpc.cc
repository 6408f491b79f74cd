#include "transport/directory_grpc.h"

#include <chrono>
#include <thread>

#include "common/logging.h"
#include "kvasir/v1/worker.grpc.pb.h"

namespace kvasir::transport {

namespace {

std::chrono::system_clock::time_point In(std::chrono::milliseconds d) {
  return std::chrono::system_clock::now() + d;
}

}  // namespace

struct KvDirectoryHost::Worker {
  std::string address;
  std::unique_ptr<v1::AttentionControl::Stub> stub;
};

class KvDirectoryHost::Service final : public v1::KvDirectory::Service {
 public:
  explicit Service(KvDirectoryHost* host) : host_(host) {}

  grpc::Status Allocate(grpc::ServerContext*, const v1::AllocateRequest* r,
                        v1::AllocateReply* out) override {
    return Reply(host_->Allocate(r->seq_key(), r->tokens()), out);
  }
  grpc::Status Extend(grpc::ServerContext*, const v1::AllocateRequest* r,
                      v1::AllocateReply* out) override {
    return Reply(host_->Extend(r->seq_key(), r->tokens()), out);
  }
  grpc::Status Free(grpc::ServerContext*, const v1::FreeRequest* r, v1::FreeReply* out) override {
    host_->Free(r->seq_key());
    host_->FillInfo(out->mutable_info());
    return grpc::Status::OK;
  }
  grpc::Status Info(grpc::ServerContext*, const v1::DirectoryInfoRequest*,
                    v1::DirectoryInfo* out) override {
    host_->FillInfo(out);
    return grpc::Status::OK;
  }

 private:
  grpc::Status Reply(const absl::StatusOr<std::vector<SegmentPlacement>>& segs,
                     v1::AllocateReply* out) {
    if (!segs.ok()) return ToGrpcStatus(segs.status());
    for (const SegmentPlacement& s : *segs) {
      v1::Segment* m = out->add_segments();
      m->set_worker(s.worker);
      m->set_base(s.base);
      m->set_capacity(s.capacity);
    }
    host_->FillInfo(out->mutable_info());
    return grpc::Status::OK;
  }

  KvDirectoryHost* host_;
};

KvDirectoryHost::KvDirectoryHost(std::vector<std::string> attention_addresses,
                                 AttentionShape expected)
    : addresses_(std::move(attention_addresses)),
      expected_(expected),
      service_(std::make_unique<Service>(this)) {}

KvDirectoryHost::~KvDirectoryHost() = default;

grpc::Service* KvDirectoryHost::service() { return service_.get(); }

absl::Status KvDirectoryHost::Connect(std::chrono::milliseconds timeout) {
  if (addresses_.empty()) return absl::InvalidArgumentError("no attention workers given");
  const auto until = std::chrono::steady_clock::now() + timeout;
  std::vector<v1::AttentionInfo> infos(addresses_.size());
  for (size_t i = 0; i < addresses_.size(); ++i) {
    auto w = std::make_unique<Worker>();
    w->address = addresses_[i];
    w->stub = v1::AttentionControl::NewStub(
        grpc::CreateChannel(w->address, grpc::InsecureChannelCredentials()));
    while (true) {
      grpc::ClientContext ctx;
      ctx.set_deadline(In(std::chrono::milliseconds(1000)));
      ctx.set_wait_for_ready(true);
      grpc::Status s = w->stub->Info(&ctx, v1::AttentionInfoRequest(), &infos[i]);
      if (s.ok()) break;
      if (std::chrono::steady_clock::now() > until) {
        return absl::UnavailableError(absl::StrCat("attention worker ", w->address,
                                                   " did not answer: ", s.error_message()));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    const v1::AttentionInfo& in = infos[i];
    if (in.num_layers() != expected_.num_layers || in.num_heads() != expected_.num_heads ||
        in.num_kv_heads() != expected_.num_kv_heads || in.head_dim() != expected_.head_dim ||
        in.block_size() != infos[0].block_size()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "attention worker ", w->address, " serves another model shape (", in.num_layers(),
          " layers, ", in.num_heads(), "/", in.num_kv_heads(), " heads, dim ", in.head_dim(),
          ", block ", in.block_size(), ")"));
    }
    workers_.push_back(std::move(w));
  }
  std::lock_guard<std::mutex> lock(mu_);
  directory_ = std::make_unique<KvDirectory>(
      static_cast<int64_t>(expected_.num_layers) * expected_.num_kv_heads, infos[0].block_size());
  for (size_t i = 0; i < addresses_.size(); ++i) {
    // Segments left from an earlier router are not known here: count only free blocks.
    directory_->AddWorker(addresses_[i], infos[i].free_blocks());
    SPDLOG_INFO("attention worker {}: {} blocks of {} tokens", addresses_[i],
                infos[i].num_blocks(), infos[i].block_size());
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<SegmentPlacement>> KvDirectoryHost::Allocate(int64_t seq_key,
                                                                        int64_t tokens) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!directory_) return absl::UnavailableError("the KV directory is not connected yet");
  ASSIGN_OR_RETURN(std::vector<PlannedSegment> plan, directory_->Allocate(seq_key, tokens));
  std::vector<SegmentPlacement> out;
  std::vector<int32_t> index;
  for (const PlannedSegment& p : plan) {
    out.push_back({addresses_[p.worker], p.base, p.capacity});
    index.push_back(p.worker);
  }
  auto worker_of = [&](const SegmentPlacement& p) {
    return workers_[index[&p - out.data()]].get();
  };
  absl::Status st = ApplyPlan(
      out,
      [&](const SegmentPlacement& p) -> absl::Status {
        Worker* w = worker_of(p);
        grpc::ClientContext ctx;
        ctx.set_deadline(In(std::chrono::milliseconds(5000)));
        v1::AllocateSegmentRequest r;
        r.set_key(seq_key);
        r.set_base(p.base);
        r.set_capacity(p.capacity);
        v1::AllocateSegmentReply reply;
        grpc::Status s = w->stub->AllocateSegment(&ctx, r, &reply);
        NoteFailure(index[&p - out.data()], s);
        return FromGrpcStatus(s, "attention worker " + w->address);
      },
      [&](const SegmentPlacement& p) {
        grpc::ClientContext ctx;
        ctx.set_deadline(In(std::chrono::milliseconds(5000)));
        v1::FreeSegmentRequest r;
        r.set_key(seq_key);
        v1::FreeSegmentReply reply;
        (void)worker_of(p)->stub->FreeSegment(&ctx, r, &reply);
      });
  if (!st.ok()) {
    directory_->Free(seq_key);
    if (absl::IsResourceExhausted(st) || absl::IsUnavailable(st)) return st;
    return absl::InternalError(st.message());
  }
  return out;
}

void KvDirectoryHost::NoteFailure(int32_t worker, const grpc::Status& s) {
  if (s.error_code() == grpc::StatusCode::UNAVAILABLE ||
      s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    directory_->SetAlive(worker, false);
    SPDLOG_ERROR("attention worker {} is unreachable; no new segments go there",
                 workers_[worker]->address);
  }
}

std::vector<SegmentPlacement> KvDirectoryHost::Placements(int64_t seq_key) {
  std::vector<SegmentPlacement> out;
  if (const auto* segs = directory_->Find(seq_key)) {
    for (const PlannedSegment& p : *segs) out.push_back({addresses_[p.worker], p.base, p.capacity});
  }
  return out;
}

absl::StatusOr<std::vector<SegmentPlacement>> KvDirectoryHost::Extend(int64_t seq_key,
                                                                      int64_t tokens) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!directory_) return absl::UnavailableError("the KV directory is not connected yet");
  bool grew = false;
  ASSIGN_OR_RETURN(PlannedSegment tail, directory_->Extend(seq_key, tokens, &grew));
  Worker* w = workers_[tail.worker].get();
  grpc::ClientContext ctx;
  ctx.set_deadline(In(std::chrono::milliseconds(5000)));
  grpc::Status s;
  v1::AllocateSegmentReply reply;
  if (grew) {
    v1::ExtendSegmentRequest r;
    r.set_key(seq_key);
    r.set_capacity(tail.capacity);
    s = w->stub->ExtendSegment(&ctx, r, &reply);
  } else {
    v1::AllocateSegmentRequest r;
    r.set_key(seq_key);
    r.set_base(tail.base);
    r.set_capacity(tail.capacity);
    s = w->stub->AllocateSegment(&ctx, r, &reply);
  }
  if (!s.ok()) {
    directory_->UndoExtend(seq_key, tokens, grew);
    NoteFailure(tail.worker, s);
    absl::Status st = FromGrpcStatus(s, "attention worker " + w->address);
    if (absl::IsResourceExhausted(st) || absl::IsUnavailable(st)) return st;
    return absl::InternalError(st.message());
  }
  return Placements(seq_key);
}

void KvDirectoryHost::Free(int64_t seq_key) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!directory_) return;
  for (const PlannedSegment& p : directory_->Free(seq_key)) {
    grpc::ClientContext ctx;
    ctx.set_deadline(In(std::chrono::milliseconds(5000)));
    v1::FreeSegmentRequest r;
    r.set_key(seq_key);
    v1::FreeSegmentReply reply;
    grpc::Status s = workers_[p.worker]->stub->FreeSegment(&ctx, r, &reply);
    if (!s.ok()) {
      SPDLOG_WARN("freeing segment {} on {}: {}", seq_key, workers_[p.worker]->address,
                  s.error_message());
    }
  }
}

void KvDirectoryHost::FillInfo(void* info_proto) {
  auto* info = static_cast<v1::DirectoryInfo*>(info_proto);
  std::lock_guard<std::mutex> lock(mu_);
  if (!directory_) return;
  info->set_max_tokens(directory_->MaxTokens());
  info->set_blocks_total(directory_->total_blocks());
  info->set_blocks_used(directory_->used_blocks());
  info->set_workers_alive(directory_->num_workers());
  info->set_blocks_per_token_block(static_cast<int64_t>(expected_.num_layers) *
                                   expected_.num_kv_heads);
  info->set_block_size(directory_->block_size());
}

KvUsage KvDirectoryHost::Usage() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!directory_) return {};
  return {directory_->total_blocks(), directory_->used_blocks()};
}

int64_t KvDirectoryHost::num_sequences() {
  std::lock_guard<std::mutex> lock(mu_);
  return directory_ ? directory_->num_sequences() : 0;
}

// ---------------------------------------------------------------------------------------------

class GrpcSegmentDirectory::Impl {
 public:
  explicit Impl(const std::string& router)
      : router_(router),
        stub_(v1::KvDirectory::NewStub(
            grpc::CreateChannel(router, grpc::InsecureChannelCredentials()))) {}

  void Remember(const v1::DirectoryInfo& i) {
    std::lock_guard<std::mutex> lock(mu_);
    max_tokens_ = i.max_tokens();
    usage_ = {i.blocks_total(), i.blocks_used()};
    if (i.block_size() > 0) shape_ = {i.blocks_per_token_block(), i.block_size()};
  }
  // Asks the router while the directory's shape is unknown, or (stale) once the last answer
  // is older than a second.
  void FetchIfUnknown(bool refresh_stale = false) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      const bool stale = std::chrono::steady_clock::now() - fetched_ > std::chrono::seconds(1);
      if (shape_.second > 0 && !(refresh_stale && stale)) return;
      fetched_ = std::chrono::steady_clock::now();
    }
    grpc::ClientContext ctx;
    ctx.set_deadline(In(std::chrono::milliseconds(2000)));
    v1::DirectoryInfo info;
    if (stub_->Info(&ctx, v1::DirectoryInfoRequest(), &info).ok()) Remember(info);
  }
  absl::StatusOr<std::vector<SegmentPlacement>> Call(bool extend, int64_t seq_key,
                                                     int64_t tokens) {
    grpc::ClientContext ctx;
    ctx.set_deadline(In(std::chrono::milliseconds(10000)));
    v1::AllocateRequest r;
    r.set_seq_key(seq_key);
    r.set_tokens(tokens);
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
  std::unique_ptr<v1::KvDirectory::Stub> stub_;
  std::mutex mu_;
  int64_t max_tokens_ = 0;
  KvUsage usage_;
  std::pair<int64_t, int32_t> shape_{0, 0};
  std::chrono::steady_clock::time_point fetched_{};
};

GrpcSegmentDirectory::GrpcSegmentDirectory(const std::string& router_address)
    : impl_(std::make_unique<Impl>(router_address)) {}
GrpcSegmentDirectory::~GrpcSegmentDirectory() = default;

absl::StatusOr<std::vector<SegmentPlacement>> GrpcSegmentDirectory::Allocate(int64_t seq_key,
                                                                             int64_t tokens) {
  return impl_->Call(false, seq_key, tokens);
}

absl::StatusOr<std::vector<SegmentPlacement>> GrpcSegmentDirectory::Extend(int64_t seq_key,
                                                                           int64_t tokens) {
  return impl_->Call(true, seq_key, tokens);
}

std::pair<int64_t, int32_t> GrpcSegmentDirectory::BlockShape() {
  impl_->FetchIfUnknown();
  std::lock_guard<std::mutex> lock(impl_->mu_);
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
  std::lock_guard<std::mutex> lock(impl_->mu_);
  return impl_->max_tokens_;
}

KvUsage GrpcSegmentDirectory::Usage() {
  impl_->FetchIfUnknown();
  std::lock_guard<std::mutex> lock(impl_->mu_);
  return impl_->usage_;
}

}  // namespace kvasir::transport

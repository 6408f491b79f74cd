#include "transport/attention_grpc.h"

#include <algorithm>
#include <atomic>
#include <cstring>

#include "kvasir/v1/attention.grpc.pb.h"
#include "kvasir/v1/worker.grpc.pb.h"

namespace kvasir::transport {

namespace {

// Packs `rows` rows of `width` floats, `stride` apart, into bytes.
void PackRows(const float* src, int64_t rows, int64_t width, int64_t stride, std::string* out) {
  out->resize(static_cast<size_t>(rows * width) * sizeof(float));
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(out->data() + r * width * sizeof(float), src + r * stride, width * sizeof(float));
  }
}

std::vector<float> Unpack(const std::string& bytes) {
  std::vector<float> v(bytes.size() / sizeof(float));
  if (!v.empty()) std::memcpy(v.data(), bytes.data(), v.size() * sizeof(float));
  return v;
}

}  // namespace

class AttentionGrpcServices::Data final : public v1::AttentionData::Service {
 public:
  Data(AttentionShard* shard, GrpcAuth auth) : shard_(shard), auth_(std::move(auth)) {}

  grpc::Status Step(grpc::ServerContext* ctx, const v1::AttentionStepRequest* req,
                    v1::AttentionStepReply* reply) override {
    KVASIR_GRPC_CHECK_AUTH(auth_, ctx);
    const AttentionShape& sh = shard_->shape();
    const int64_t qw = sh.q_dim(), kvw = sh.kv_dim();
    // Copy the frames out of the message (alignment), checking every size first.
    std::vector<std::vector<float>> q(req->items_size()), k(req->items_size()),
        v(req->items_size());
    std::vector<ShardItem> items(req->items_size());
    int64_t rows = 0;
    for (int i = 0; i < req->items_size(); ++i) {
      const v1::AttentionItem& it = req->items(i);
      if (it.num_queries() < 0 || it.num_append() < 0 || it.num_append() > it.num_queries() ||
          it.q().size() != static_cast<size_t>(it.num_queries()) * qw * sizeof(float) ||
          it.k().size() != static_cast<size_t>(it.num_append()) * kvw * sizeof(float) ||
          it.v().size() != it.k().size()) {
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            absl::StrCat("item ", i, " (segment ", it.segment_key(),
                                         "): tensor sizes do not match its counts and the "
                                         "model's shapes (q ", qw, ", kv ", kvw, " floats/row)"));
      }
      q[i] = Unpack(it.q());
      k[i] = Unpack(it.k());
      v[i] = Unpack(it.v());
      ShardItem& s = items[i];
      s.segment_key = it.segment_key();
      s.q_start = it.q_start();
      s.num_queries = it.num_queries();
      s.q = q[i].data();
      s.q_stride = qw;
      s.num_append = it.num_append();
      s.k = k[i].data();
      s.v = v[i].data();
      s.kv_stride = kvw;
      rows += it.num_queries();
    }
    std::vector<float> o(rows * qw), lse(rows * sh.num_heads);
    absl::Status st = shard_->Step(req->layer(), items, o.data(), lse.data());
    if (!st.ok()) return ToGrpcStatus(st);
    reply->set_o(reinterpret_cast<const char*>(o.data()), o.size() * sizeof(float));
    reply->set_lse(reinterpret_cast<const char*>(lse.data()), lse.size() * sizeof(float));
    return grpc::Status::OK;
  }

 private:
  AttentionShard* shard_;
  const GrpcAuth auth_;
};

class AttentionGrpcServices::Control final : public v1::AttentionControl::Service {
 public:
  Control(AttentionShard* shard, GrpcAuth auth, int data_port)
      : shard_(shard), auth_(std::move(auth)), data_port_(data_port) {}

  grpc::Status Info(grpc::ServerContext* ctx, const v1::AttentionInfoRequest*,
                    v1::AttentionInfo* out) override {
    KVASIR_GRPC_CHECK_AUTH(auth_, ctx);
    ShardInfo i = shard_->Info();
    out->set_num_layers(i.shape.num_layers);
    out->set_num_heads(i.shape.num_heads);
    out->set_num_kv_heads(i.shape.num_kv_heads);
    out->set_head_dim(i.shape.head_dim);
    out->set_block_size(i.block_size);
    out->set_num_blocks(i.num_blocks);
    out->set_free_blocks(i.free_blocks);
    out->set_num_segments(i.num_segments);
    out->set_data_port(data_port_);
    return grpc::Status::OK;
  }
  grpc::Status AllocateSegment(grpc::ServerContext* ctx, const v1::AllocateSegmentRequest* r,
                               v1::AllocateSegmentReply*) override {
    KVASIR_GRPC_CHECK_AUTH(auth_, ctx);
    return ToGrpcStatus(shard_->AllocateSegment(r->key(), r->base(), r->capacity()));
  }
  grpc::Status ExtendSegment(grpc::ServerContext* ctx, const v1::ExtendSegmentRequest* r,
                             v1::AllocateSegmentReply*) override {
    KVASIR_GRPC_CHECK_AUTH(auth_, ctx);
    return ToGrpcStatus(shard_->ExtendSegment(r->key(), r->capacity()));
  }
  grpc::Status FreeSegment(grpc::ServerContext* ctx, const v1::FreeSegmentRequest* r,
                           v1::FreeSegmentReply*) override {
    KVASIR_GRPC_CHECK_AUTH(auth_, ctx);
    shard_->FreeSegment(r->key());
    return grpc::Status::OK;
  }

 private:
  AttentionShard* shard_;
  const GrpcAuth auth_;
  const int data_port_;
};

AttentionGrpcServices::AttentionGrpcServices(AttentionShard* shard, GrpcAuth auth, int data_port)
    : data_(std::make_unique<Data>(shard, auth)),
      control_(std::make_unique<Control>(shard, std::move(auth), data_port)) {}
AttentionGrpcServices::~AttentionGrpcServices() = default;
std::vector<grpc::Service*> AttentionGrpcServices::services() {
  return {data_.get(), control_.get()};
}

// ---------------------------------------------------------------------------------------------

class GrpcAttentionLinks::Link : public AttentionLink {
 public:
  Link(const std::string& address, const GrpcAuth& auth, std::chrono::milliseconds timeout,
       const AttentionShape& shape, const DataPlaneOptions& plane)
      : address_(address), timeout_(timeout) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(1 << 30);
    args.SetMaxSendMessageSize(1 << 30);
    auto channel = AuthChannel(address, auth, args);
    stub_ = v1::AttentionData::NewStub(channel);
    control_ = v1::AttentionControl::NewStub(channel);
    SetShape(shape);
    if (plane.tcp) {
      tcp_ = std::make_unique<TcpAttentionLink>(
          "attention worker " + address, [this] { return ResolveDataPlane(); }, auth.token(),
          shape, timeout, plane.dtype);
    }
  }

  void Step(int32_t layer, std::span<const ShardItem> items, int64_t rows, float* o, float* lse,
            std::function<void(absl::Status)> done) override {
    if (tcp_ != nullptr && !grpc_only_.load(std::memory_order_relaxed)) {
      // A worker found to have no data port fails the TCP step inline (while resolving): that
      // step, and every later one, goes over gRPC instead.
      tcp_->Step(layer, items, rows, o, lse,
                 [this, layer, items, rows, o, lse, done](absl::Status st) mutable {
                   if (!st.ok() && grpc_only_.load(std::memory_order_relaxed)) {
                     GrpcStep(layer, items, rows, o, lse, std::move(done));
                     return;
                   }
                   done(std::move(st));
                 });
      return;
    }
    GrpcStep(layer, items, rows, o, lse, std::move(done));
  }

  void Collect() override {
    if (tcp_ != nullptr) tcp_->Collect();  // nothing pending there when gRPC carried the steps
  }

 private:
  // The worker's data-plane address from its control service: the host of its gRPC address
  // and the port it advertises. A worker without one (data_port 0) is reached over gRPC from
  // then on.
  absl::StatusOr<std::string> ResolveDataPlane() {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::min<std::chrono::milliseconds>(timeout_, std::chrono::seconds(2)));
    v1::AttentionInfo info;
    grpc::Status s = control_->Info(&ctx, v1::AttentionInfoRequest{}, &info);
    if (!s.ok()) return FromGrpcStatus(s, "attention worker " + address_);
    if (info.data_port() <= 0) {
      grpc_only_.store(true, std::memory_order_relaxed);
      return absl::UnavailableError("attention worker " + address_ +
                                    " has no TCP data plane; using gRPC");
    }
    const size_t colon = address_.rfind(':');
    return absl::StrCat(address_.substr(0, colon), ":", info.data_port());
  }

  void GrpcStep(int32_t layer, std::span<const ShardItem> items, int64_t rows, float* o,
                float* lse, std::function<void(absl::Status)> done) {
    struct Call {
      grpc::ClientContext ctx;
      v1::AttentionStepRequest req;
      v1::AttentionStepReply reply;
    };
    auto* call = new Call;
    call->ctx.set_deadline(std::chrono::system_clock::now() + timeout_);
    call->req.set_layer(layer);
    int64_t qw = 0, kvw = 0, heads = 0;
    for (const ShardItem& it : items) {
      v1::AttentionItem* m = call->req.add_items();
      m->set_segment_key(it.segment_key);
      m->set_q_start(it.q_start);
      m->set_num_queries(it.num_queries);
      m->set_num_append(it.num_append);
      qw = q_width_;
      kvw = kv_width_;
      PackRows(it.q, it.num_queries, qw, it.q_stride, m->mutable_q());
      PackRows(it.k, it.num_append, kvw, it.kv_stride, m->mutable_k());
      PackRows(it.v, it.num_append, kvw, it.kv_stride, m->mutable_v());
    }
    heads = num_heads_;
    const std::string address = address_;
    stub_->async()->Step(
        &call->ctx, &call->req, &call->reply,
        [call, rows, o, lse, qw, heads, address, done = std::move(done)](grpc::Status s) {
          absl::Status st = FromGrpcStatus(s, "attention worker " + address);
          if (st.ok()) {
            const size_t o_bytes = static_cast<size_t>(rows * qw) * sizeof(float);
            const size_t l_bytes = static_cast<size_t>(rows * heads) * sizeof(float);
            if (call->reply.o().size() != o_bytes || call->reply.lse().size() != l_bytes) {
              st = absl::DataLossError("attention worker " + address +
                                       ": reply sizes do not match the request");
            } else {
              if (o_bytes > 0) std::memcpy(o, call->reply.o().data(), o_bytes);
              if (l_bytes > 0) std::memcpy(lse, call->reply.lse().data(), l_bytes);
            }
          }
          delete call;
          done(std::move(st));
        });
  }

  void SetShape(const AttentionShape& s) {
    q_width_ = s.q_dim();
    kv_width_ = s.kv_dim();
    num_heads_ = s.num_heads;
  }

  std::string address_;
  const std::chrono::milliseconds timeout_;
  std::unique_ptr<v1::AttentionData::Stub> stub_;
  std::unique_ptr<v1::AttentionControl::Stub> control_;
  std::unique_ptr<TcpAttentionLink> tcp_;  // null: gRPC only
  std::atomic<bool> grpc_only_{false};     // the worker advertises no data port
  int64_t q_width_ = 0, kv_width_ = 0, num_heads_ = 0;
};

GrpcAttentionLinks::GrpcAttentionLinks(AttentionShape shape, GrpcAuth auth,
                                       std::chrono::milliseconds step_timeout,
                                       DataPlaneOptions plane)
    : shape_(shape), auth_(std::move(auth)), step_timeout_(step_timeout), plane_(plane) {}
GrpcAttentionLinks::~GrpcAttentionLinks() = default;

absl::StatusOr<AttentionLink*> GrpcAttentionLinks::Get(const std::string& address) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = links_.find(address);
  if (it != links_.end()) return it->second.get();
  if (address.empty()) return absl::InvalidArgumentError("empty attention worker address");
  auto link = std::make_unique<Link>(address, auth_, step_timeout_, shape_, plane_);
  AttentionLink* raw = link.get();
  links_[address] = std::move(link);
  return raw;
}

}  // namespace kvasir::transport

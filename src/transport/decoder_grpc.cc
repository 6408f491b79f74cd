#include "transport/decoder_grpc.h"

#include <chrono>
#include <condition_variable>
#include <deque>
#include <thread>

#include "absl/strings/str_join.h"
#include "common/logging.h"
#include "kvasir/v1/worker.grpc.pb.h"

namespace kvasir::transport {

namespace {

void ToProto(const SamplingParams& p, v1::SamplingParamsProto* out) {
  out->set_temperature(p.temperature);
  out->set_top_k(p.top_k);
  out->set_top_p(p.top_p);
  out->set_min_p(p.min_p);
  out->set_repetition_penalty(p.repetition_penalty);
  out->set_presence_penalty(p.presence_penalty);
  out->set_frequency_penalty(p.frequency_penalty);
  if (p.seed) out->set_seed(*p.seed);
  out->set_max_tokens(p.max_tokens);
  for (int32_t t : p.stop_token_ids) out->add_stop_token_ids(t);
  out->set_ignore_eos(p.ignore_eos);
  out->set_logprobs(p.logprobs);
}

SamplingParams FromProto(const v1::SamplingParamsProto& in) {
  SamplingParams p;
  p.temperature = in.temperature();
  p.top_k = in.top_k();
  p.top_p = in.top_p();
  p.min_p = in.min_p();
  p.repetition_penalty = in.repetition_penalty();
  p.presence_penalty = in.presence_penalty();
  p.frequency_penalty = in.frequency_penalty();
  if (in.has_seed()) p.seed = in.seed();
  p.max_tokens = in.max_tokens();
  p.stop_token_ids.assign(in.stop_token_ids().begin(), in.stop_token_ids().end());
  p.ignore_eos = in.ignore_eos();
  p.logprobs = in.logprobs();
  return p;
}

void ToProto(const EngineEvent& ev, v1::TokenEvent* out) {
  for (size_t i = 0; i < ev.tokens.size(); ++i) {
    v1::SampledToken* t = out->add_tokens();
    t->set_token(ev.tokens[i]);
    if (i < ev.samples.size()) {
      t->set_logprob(ev.samples[i].logprob);
      for (const TokenLogprob& tl : ev.samples[i].top) {
        v1::TopLogprob* m = t->add_top();
        m->set_token(tl.token);
        m->set_logprob(tl.logprob);
      }
    }
  }
  out->set_finished(ev.finished);
  out->set_finish_reason(ev.finish_reason);
  if (!ev.error.ok()) {
    out->set_error(std::string(ev.error.message()));
    out->set_error_code(static_cast<int32_t>(ev.error.code()));
  }
}

EngineEvent FromProto(uint64_t id, const v1::TokenEvent& in) {
  EngineEvent ev;
  ev.id = id;
  for (const v1::SampledToken& t : in.tokens()) {
    ev.tokens.push_back(t.token());
    SampleResult r;
    r.token = t.token();
    r.logprob = t.logprob();
    for (const v1::TopLogprob& m : t.top()) r.top.push_back({m.token(), m.logprob()});
    ev.samples.push_back(std::move(r));
  }
  ev.finished = in.finished();
  ev.finish_reason = in.finish_reason();
  if (ev.finish_reason == "error") {
    const auto code = static_cast<absl::StatusCode>(in.error_code());
    ev.error = absl::Status(code == absl::StatusCode::kOk ? absl::StatusCode::kInternal : code,
                            in.error());
  }
  return ev;
}

std::chrono::system_clock::time_point In(std::chrono::milliseconds d) {
  return std::chrono::system_clock::now() + d;
}

}  // namespace

// ---- Decoder side ---------------------------------------------------------------------------

class DecoderGrpcService::Impl final : public v1::Decoder::Service {
 public:
  Impl(Engine* engine, GrpcAuth auth) : engine_(engine), auth_(std::move(auth)) {}

  grpc::Status Submit(grpc::ServerContext* ctx, const v1::SubmitRequest* in,
                      grpc::ServerWriter<v1::TokenEvent>* writer) override {
    KVASIR_GRPC_CHECK_AUTH(auth_, ctx);
    struct Queue {
      std::mutex mu;
      std::condition_variable cv;
      std::deque<EngineEvent> events;
    };
    auto q = std::make_shared<Queue>();
    EngineRequest er;
    er.id = in->request_id();
    er.prompt.assign(in->prompt().begin(), in->prompt().end());
    er.params = FromProto(in->params());
    er.generated.assign(in->generated().begin(), in->generated().end());
    const ModelConfig& c = engine_->model_config();
    if (absl::Status s = ValidateSamplingParams(er.params, c.vocab_size); !s.ok()) {
      return ToGrpcStatus(s);
    }
    for (int32_t t : er.generated) {
      if (t < 0 || t >= c.vocab_size) {
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            absl::StrCat("generated token ", t, " is outside the vocabulary"));
      }
    }
    for (int32_t t : er.prompt) {
      if (t < 0 || t >= c.vocab_size) {
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            absl::StrCat("prompt token ", t, " is outside the vocabulary"));
      }
    }
    er.on_event = [q](EngineEvent ev) {
      std::lock_guard<std::mutex> lock(q->mu);
      q->events.push_back(std::move(ev));
      q->cv.notify_one();
    };
    const uint64_t id = er.id;
    if (absl::Status s = engine_->Submit(std::move(er)); !s.ok()) return ToGrpcStatus(s);
    v1::TokenEvent ack;
    ack.set_accepted(true);
    bool cancelled = !writer->Write(ack);
    if (cancelled) engine_->Cancel(id);
    while (true) {
      EngineEvent ev;
      {
        std::unique_lock<std::mutex> lock(q->mu);
        if (!q->cv.wait_for(lock, std::chrono::milliseconds(100),
                            [&] { return !q->events.empty(); })) {
          lock.unlock();
          if (!cancelled && ctx->IsCancelled()) {
            engine_->Cancel(id);  // the router's client went away: free the KV now
            cancelled = true;
          }
          continue;
        }
        ev = std::move(q->events.front());
        q->events.pop_front();
      }
      if (!cancelled) {
        v1::TokenEvent out;
        ToProto(ev, &out);
        if (!writer->Write(out)) {
          engine_->Cancel(id);
          cancelled = true;
        }
      }
      if (ev.finished) return grpc::Status::OK;
    }
  }

  grpc::Status Cancel(grpc::ServerContext* ctx, const v1::CancelRequest* r,
                      v1::CancelReply*) override {
    KVASIR_GRPC_CHECK_AUTH(auth_, ctx);
    engine_->Cancel(r->request_id());
    return grpc::Status::OK;
  }

  grpc::Status Stats(grpc::ServerContext* ctx, const v1::StatsRequest*,
                     v1::DecoderStats* out) override {
    KVASIR_GRPC_CHECK_AUTH(auth_, ctx);
    EngineStats s = engine_->stats();
    out->set_running(s.running);
    out->set_waiting(s.waiting);
    out->set_kv_blocks_total(s.kv_blocks_total);
    out->set_kv_blocks_used(s.kv_blocks_used);
    out->set_steps(s.steps);
    out->set_preemptions(s.preemptions);
    return grpc::Status::OK;
  }

 private:
  Engine* engine_;
  const GrpcAuth auth_;
};

DecoderGrpcService::DecoderGrpcService(Engine* engine, GrpcAuth auth)
    : impl_(std::make_unique<Impl>(engine, std::move(auth))) {}
DecoderGrpcService::~DecoderGrpcService() = default;
grpc::Service* DecoderGrpcService::service() { return impl_.get(); }

// ---- Router side ----------------------------------------------------------------------------

struct RemoteDecoders::Decoder {
  std::string address;
  std::unique_ptr<v1::Decoder::Stub> stub;
  sched::WorkerLoad load;  // guarded by RemoteDecoders::mu_
  EngineStats stats;       // last poll, guarded by mu_
};

// One request in flight on a decoder: a reactor reading its token events.
class RemoteDecoders::Call : public grpc::ClientReadReactor<v1::TokenEvent> {
 public:
  struct Ack {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    absl::Status status;
  };

  Call(RemoteDecoders* owner, size_t decoder, EngineRequest req, int64_t tokens, int migrations)
      : owner_(owner),
        decoder_(decoder),
        id_(req.id),
        tokens_(tokens),
        migrations_(migrations),
        on_event_(std::move(req.on_event)),
        ack_(std::make_shared<Ack>()) {
    in_.set_request_id(req.id);
    in_.mutable_prompt()->Add(req.prompt.begin(), req.prompt.end());
    in_.mutable_generated()->Add(req.generated.begin(), req.generated.end());
    ToProto(req.params, in_.mutable_params());
    req.on_event = nullptr;
    request_ = std::move(req);
  }

  std::shared_ptr<Ack> ack() { return ack_; }
  void Cancel() { ctx_.TryCancel(); }

  void Begin(v1::Decoder::Stub* stub) {
    stub->async()->Submit(&ctx_, &in_, this);
    StartRead(&ev_);
    StartCall();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // OnDone follows
    if (ev_.accepted()) {
      accepted_ = true;
      Signal(absl::OkStatus());
    } else {
      EngineEvent e = FromProto(id_, ev_);
      if (e.finished) finished_ = true;
      // What the client has got: where a migrated stream goes on from.
      request_.generated.insert(request_.generated.end(), e.tokens.begin(), e.tokens.end());
      if (on_event_) on_event_(std::move(e));
    }
    StartRead(&ev_);
  }

  void OnDone(const grpc::Status& s) override {
    const std::string where = "decoder " + owner_->decoders_[decoder_]->address;
    if (!accepted_) {
      Signal(FromGrpcStatus(s, where));
    } else if (!finished_ && on_event_ && s.error_code() != grpc::StatusCode::CANCELLED &&
               migrations_ < owner_->migration_limit_ && !owner_->stop_) {
      // The decoder died (or its stream broke) mid-request: go on elsewhere from what the
      // client has got, so it sees neither a gap nor a repeat.
      SPDLOG_WARN("{} failed mid-request {} after {} tokens ({}); migrating it", where, id_,
                  request_.generated.size(), s.error_message());
      request_.on_event = std::move(on_event_);
      // Forgotten first: the migrated call registers under the same id.
      owner_->Finished(id_, decoder_, tokens_);
      owner_->Migrate(std::move(request_), decoder_, migrations_ + 1);
      delete this;
      return;
    } else if (!finished_ && on_event_) {
      EngineEvent e;
      e.id = id_;
      e.finished = true;
      if (s.error_code() == grpc::StatusCode::CANCELLED) {
        e.finish_reason = "abort";
      } else {
        e.finish_reason = "error";
        e.error = absl::UnavailableError(
            absl::StrCat(where, " failed mid-request: ",
                         s.ok() ? std::string("stream ended early") : s.error_message()));
      }
      on_event_(std::move(e));
    }
    owner_->Finished(id_, decoder_, tokens_);
    delete this;
  }

 private:
  void Signal(absl::Status s) {
    std::lock_guard<std::mutex> lock(ack_->mu);
    if (ack_->done) return;
    ack_->done = true;
    ack_->status = std::move(s);
    ack_->cv.notify_all();
  }

  RemoteDecoders* owner_;
  const size_t decoder_;
  const uint64_t id_;
  const int64_t tokens_;
  const int migrations_;   // times this request was migrated before this call
  EngineRequest request_;  // without on_event; generated grows with every event
  std::function<void(EngineEvent)> on_event_;
  std::shared_ptr<Ack> ack_;
  grpc::ClientContext ctx_;
  v1::SubmitRequest in_;
  v1::TokenEvent ev_;
  bool accepted_ = false;
  bool finished_ = false;
};

RemoteDecoders::RemoteDecoders(std::vector<std::string> addresses, ModelConfig config,
                               std::unique_ptr<sched::PlacementPolicy> policy,
                               std::function<KvUsage()> kv_usage, const GrpcAuth& auth,
                               int migration_limit)
    : config_(std::move(config)),
      kv_usage_(std::move(kv_usage)),
      policy_(std::move(policy)),
      migration_limit_(migration_limit) {
  for (const std::string& a : addresses) {
    auto d = std::make_unique<Decoder>();
    d->address = a;
    d->stub = v1::Decoder::NewStub(AuthChannel(a, auth));
    d->load.healthy = false;  // until the first poll answers
    decoders_.push_back(std::move(d));
  }
}

RemoteDecoders::~RemoteDecoders() { Stop(); }

void RemoteDecoders::Start(std::chrono::milliseconds period) {
  Poll();
  migrator_ = std::thread([this] { MigrationLoop(); });
  poller_ = std::thread([this, period] {
    std::unique_lock<std::mutex> lock(poll_mu_);
    while (!stop_) {
      poll_cv_.wait_for(lock, period, [&] { return stop_.load(); });
      if (stop_) break;
      lock.unlock();
      Poll();
      lock.lock();
    }
  });
}

void RemoteDecoders::Stop() {
  {
    std::lock_guard<std::mutex> lock(poll_mu_);
    stop_ = true;
  }
  poll_cv_.notify_all();
  if (poller_.joinable()) poller_.join();
  migrate_cv_.notify_all();
  if (migrator_.joinable()) migrator_.join();
  std::unique_lock<std::mutex> lock(mu_);
  for (auto& [id, call] : calls_) call->Cancel();
  idle_.wait_for(lock, std::chrono::seconds(5), [&] { return calls_.empty(); });
}

void RemoteDecoders::Poll() {
  for (size_t i = 0; i < decoders_.size(); ++i) {
    Decoder& d = *decoders_[i];
    grpc::ClientContext ctx;
    ctx.set_deadline(In(std::chrono::milliseconds(1000)));
    v1::DecoderStats s;
    grpc::Status st = d.stub->Stats(&ctx, v1::StatsRequest(), &s);
    std::lock_guard<std::mutex> lock(mu_);
    if (st.ok() != d.load.healthy) {
      if (st.ok()) {
        SPDLOG_INFO("decoder {} is up", d.address);
      } else {
        SPDLOG_WARN("decoder {} is unreachable: {}", d.address, st.error_message());
      }
    }
    d.load.healthy = st.ok();
    if (st.ok()) {
      d.stats.running = s.running();
      d.stats.waiting = s.waiting();
      d.stats.steps = s.steps();
      d.stats.preemptions = s.preemptions();
    } else {
      d.stats = EngineStats{};
    }
  }
}

bool RemoteDecoders::healthy() const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& d : decoders_) {
    if (d->load.healthy) return true;
  }
  return false;
}

std::string RemoteDecoders::Unreachable() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> down;
  for (const auto& d : decoders_) {
    if (!d->load.healthy) down.push_back(d->address);
  }
  if (down.empty()) return "";
  return absl::StrCat(down.size(), " of ", decoders_.size(), " decoders unreachable (",
                      absl::StrJoin(down, ", "), ")");
}

EngineStats RemoteDecoders::stats() const {
  EngineStats out;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& d : decoders_) {
      out.running += d->stats.running;
      out.waiting += d->stats.waiting;
      out.steps += d->stats.steps;
      out.preemptions += d->stats.preemptions;
    }
  }
  if (kv_usage_) {
    KvUsage u = kv_usage_();
    out.kv_blocks_total = u.blocks_total;
    out.kv_blocks_used = u.blocks_used;
  }
  return out;
}

absl::Status RemoteDecoders::Submit(EngineRequest request) {
  if (request.kv_policy && request.kv_policy->kind != KvPolicyKind::kFull) {
    // The KV lives on attention workers, which do not evict yet: refusing beats ignoring it.
    return absl::InvalidArgumentError(absl::StrCat(
        "kv_policy ", std::string(KvPolicyName(request.kv_policy->kind)),
        " is not supported by the cluster's attention workers yet; use kv_policy full or "
        "kvasir serve"));
  }
  return Place(std::move(request), std::vector<bool>(decoders_.size(), false), 0);
}

void RemoteDecoders::Migrate(EngineRequest request, size_t dead_decoder, int migrations) {
  {
    std::lock_guard<std::mutex> lock(migrate_mu_);
    migrations_.push_back({std::move(request), dead_decoder, migrations});
  }
  migrate_cv_.notify_one();
}

void RemoteDecoders::MigrationLoop() {
  std::unique_lock<std::mutex> lock(migrate_mu_);
  while (true) {
    migrate_cv_.wait(lock, [&] { return stop_.load() || !migrations_.empty(); });
    if (migrations_.empty()) return;  // stopping, nothing left
    Migration m = std::move(migrations_.front());
    migrations_.pop_front();
    lock.unlock();
    std::function<void(EngineEvent)> on_event = m.request.on_event;
    const uint64_t id = m.request.id;
    std::vector<bool> tried(decoders_.size(), false);
    tried[m.dead_decoder] = true;
    absl::Status st = absl::UnavailableError("the router is shutting down");
    // A decoder that has just come up (or whose poll is late) counts: poll again before
    // giving up, for up to about a second.
    for (int attempt = 0; attempt < 5 && !stop_; ++attempt) {
      if (attempt > 0) {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        Poll();
      }
      st = Place(m.request, tried, m.migrations);
      if (st.ok() || !absl::IsUnavailable(st)) break;
    }
    if (st.ok()) {
      ++migrations_total_;
      SPDLOG_INFO("request {} resumed on another decoder (migration {})", id, m.migrations);
    } else if (on_event) {
      EngineEvent e;
      e.id = id;
      e.finished = true;
      e.finish_reason = "error";
      e.error = absl::UnavailableError(absl::StrCat(
          "its decoder died mid-request and no other decoder could resume it: ", st.message()));
      on_event(std::move(e));
    }
    lock.lock();
  }
}

absl::Status RemoteDecoders::Place(EngineRequest request, std::vector<bool> tried,
                                   int migrations) {
  const int64_t tokens = static_cast<int64_t>(request.prompt.size()) + request.params.max_tokens;
  absl::Status last = absl::UnavailableError("no decoder worker is reachable");
  for (size_t attempt = 0; attempt < decoders_.size(); ++attempt) {
    Call* call;
    size_t pick;
    {
      std::lock_guard<std::mutex> lock(mu_);
      std::vector<sched::WorkerLoad> loads;
      for (size_t i = 0; i < decoders_.size(); ++i) {
        sched::WorkerLoad l = decoders_[i]->load;
        if (tried[i]) l.healthy = false;
        loads.push_back(l);
      }
      auto p = policy_->Pick(loads, {static_cast<int64_t>(request.prompt.size()),
                                     request.params.max_tokens});
      if (!p.ok()) return last;
      pick = *p;
      tried[pick] = true;
      // The request is copied: a refused attempt may be retried on another decoder.
      call = new Call(this, pick, request, tokens, migrations);
      decoders_[pick]->load.outstanding_requests += 1;
      decoders_[pick]->load.outstanding_tokens += tokens;
      calls_[request.id] = call;
    }
    std::shared_ptr<Call::Ack> ack = call->ack();
    call->Begin(decoders_[pick]->stub.get());  // `call` may be deleted from here on
    std::unique_lock<std::mutex> lock(ack->mu);
    if (!ack->cv.wait_for(lock, std::chrono::seconds(30), [&] { return ack->done; })) {
      lock.unlock();
      Cancel(request.id);
      return absl::UnavailableError("decoder " + decoders_[pick]->address +
                                    " did not acknowledge the request within 30 s");
    }
    if (ack->status.ok()) return absl::OkStatus();
    last = ack->status;
    if (!absl::IsUnavailable(last)) return last;
    std::lock_guard<std::mutex> dl(mu_);
    decoders_[pick]->load.healthy = false;  // try another decoder
  }
  return last;
}

void RemoteDecoders::Cancel(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = calls_.find(id); it != calls_.end()) it->second->Cancel();
}

void RemoteDecoders::Finished(uint64_t id, size_t decoder, int64_t tokens) {
  std::lock_guard<std::mutex> lock(mu_);
  calls_.erase(id);
  decoders_[decoder]->load.outstanding_requests -= 1;
  decoders_[decoder]->load.outstanding_tokens -= tokens;
  if (calls_.empty()) idle_.notify_all();
}

}  // namespace kvasir::transport

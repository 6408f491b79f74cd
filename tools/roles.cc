#include "tools/roles.h"

#include "absl/strings/str_join.h"
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "api/http_server.h"
#include "attention/attention_shard.h"
#include "attention/distributed_attention.h"
#include "common/logging.h"
#include "common/secret.h"
#include "decoder/engine.h"
#include "router/kv_manager.h"
#include "tools/cli_args.h"
#include "tools/engine_setup.h"
#include "transport/attention_grpc.h"
#include "transport/completion_grpc.h"
#include "transport/decoder_grpc.h"
#include "transport/directory_grpc.h"

namespace kvasir {
namespace {

using cli::Args;
using cli::Fail;
using cli::With;

// Blocks SIGINT/SIGTERM in this thread and every thread started after it; WaitForSignal()
// returns when one arrives.
class SignalWaiter {
 public:
  SignalWaiter() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGINT);
    sigaddset(&set_, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set_, nullptr);
  }
  void Wait() {
    int sig = 0;
    sigwait(&set_, &sig);
    std::fprintf(stderr, "kvasir: signal %d, shutting down\n", sig);
  }

 private:
  sigset_t set_;
};

AttentionShape ShapeOf(const ModelConfig& c) {
  return {c.num_heads, c.num_kv_heads, c.head_dim, c.num_layers};
}

absl::StatusOr<int> PortFlag(const Args& a, const std::string& name, int def, int min) {
  ASSIGN_OR_RETURN(int64_t v, a.Int(name, def));
  if (v < min || v > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, " must be in [", min, ", 65535]"));
  }
  return static_cast<int>(v);
}

absl::StatusOr<int32_t> PositiveFlag(const Args& a, const std::string& name, int64_t def) {
  ASSIGN_OR_RETURN(int64_t v, a.Int(name, def));
  if (v < 1 || v > INT32_MAX) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, " must be a positive integer"));
  }
  return static_cast<int32_t>(v);
}

absl::StatusOr<std::vector<std::string>> AddressList(const Args& a, const std::string& name) {
  std::vector<std::string> out;
  for (const std::string& v : a.All(name)) {
    for (absl::string_view part : absl::StrSplit(v, ',', absl::SkipWhitespace())) {
      std::string p(part);
      if (p.find(':') == std::string::npos) {
        return absl::InvalidArgumentError(
            absl::StrCat("--", name, ": '", p, "' is not HOST:PORT"));
      }
      out.push_back(p);
    }
  }
  if (out.empty()) return absl::InvalidArgumentError(absl::StrCat("--", name, " is required"));
  return out;
}

#define KVASIR_ASSIGN_OR_FAIL(lhs, expr) \
  auto lhs##_or = (expr);                \
  if (!lhs##_or.ok()) return Fail(lhs##_or.status()); \
  auto lhs = *std::move(lhs##_or)

std::vector<cli::FlagSpec> FrontEndFlags() {
  return {
      {"host", true, "listen address (default 127.0.0.1)"},
      {"port", true, "HTTP port (default 8000; 0 picks a free one and prints it)"},
      {"api-key", true,
       "require Authorization: Bearer KEY on HTTP and gRPC (visible in ps: prefer "
       "--api-key-file or $KVASIR_API_KEY)"},
      {"api-key-file", true, "read the API key from this file"},
      {"served-model-name", true, "model id reported and accepted (default: model dir name)"},
      {"kv-policy", true,
       "default KV eviction after the prompt: full (default), taskkv, streaming, snapkv, adakv "
       "(requests override it with kv_policy)"},
      {"kv-budget", true,
       "default KV kept per head: a fraction of the prompt in (0, 1] or a token count "
       "(default 0.4 with a policy; requests override it with kv_budget)"},
  };
}

// The API key: --api-key, --api-key-file or $KVASIR_API_KEY (empty: no auth).
absl::StatusOr<std::string> ApiKeyFromArgs(const Args& a) {
  if (!a.Str("api-key").empty()) {
    SPDLOG_WARN("--api-key is visible to every user of this host (ps); prefer --api-key-file "
                "or KVASIR_API_KEY");
  }
  return ResolveSecret("API key", a.Str("api-key"), a.Str("api-key-file"), "KVASIR_API_KEY");
}

// Every role of a cluster serves and calls the internal services with the cluster secret.
const std::vector<cli::FlagSpec> kClusterSecretFlags = {
    {"cluster-secret-file", true,
     "file holding the secret the roles of a cluster share (else $KVASIR_CLUSTER_SECRET)"},
    {"insecure-cluster", false,
     "run without a cluster secret: the internal gRPC services accept anyone"},
};

absl::StatusOr<transport::GrpcAuth> ClusterAuthFromArgs(const Args& a) {
  ASSIGN_OR_RETURN(std::string secret,
                   ResolveSecret("cluster secret", "", a.Str("cluster-secret-file"),
                                 "KVASIR_CLUSTER_SECRET"));
  if (secret.empty()) {
    if (!a.Has("insecure-cluster")) {
      return absl::FailedPreconditionError(
          "the internal gRPC services need a cluster secret: set KVASIR_CLUSTER_SECRET or "
          "--cluster-secret-file FILE to the same value on every role (`kvasir cluster` makes "
          "one), or pass --insecure-cluster to accept any caller");
    }
    SPDLOG_WARN("--insecure-cluster: the internal gRPC services accept any caller");
  }
  return transport::GrpcAuth(std::move(secret), "cluster secret");
}

// A --kv-policy default (KvPolicyFromArgs) that compresses needs KV that honours it (a local
// host pool).
absl::Status CheckKvPolicyDefault(const std::optional<KvPolicy>& p, bool kv_policies) {
  if (!p || p->kind == KvPolicyKind::kFull || kv_policies) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "--kv-policy ", std::string(KvPolicyName(p->kind)),
      " needs the KV in this process's own host pool (kvasir serve on the CPU without "
      "--attention-shards); here every request would be refused"));
}

// The OpenAI HTTP server and the gRPC Completion service (plus `extra` gRPC services) over
// `engine`, until SIGINT/SIGTERM. Prints the HTTP port, then the gRPC port when it serves one.
// kv_policies: whether the engine's KV honours a compressing kv_policy (only a local pool of
// this process does); a --kv-policy default that it does not is refused at start-up.
int RunFrontEnd(const Args& a, const LocalModel& m, EngineHandle* engine, int grpc_port,
                bool kv_policies, std::vector<grpc::Service*> extra, SignalWaiter& signals,
                const std::function<void()>& before_stop, KvManager* kv_manager = nullptr,
                std::function<std::string()> decoders_down = nullptr) {
  KVASIR_ASSIGN_OR_FAIL(port, PortFlag(a, "port", 8000, 0));
  if (!m.tokenizer) return Fail(absl::FailedPreconditionError("the model has no tokenizer"));
  ServiceConfig sc;
  sc.model_name =
      a.Str("served-model-name", std::filesystem::path(m.model_dir).filename().string());
  if (sc.model_name.empty()) sc.model_name = m.weights->config.name;
  auto tc = ReadFileToString((std::filesystem::path(m.model_dir) / "tokenizer_config.json").string());
  sc.chat_format = api::DetectChatFormat(tc.ok() ? *tc : "");
  KVASIR_ASSIGN_OR_FAIL(default_kv_policy, KvPolicyFromArgs(a));
  if (absl::Status st = CheckKvPolicyDefault(default_kv_policy, kv_policies); !st.ok()) {
    return Fail(st);
  }
  sc.default_kv_policy = default_kv_policy;
  if (kv_manager != nullptr) {
    sc.extra_metrics = [kv_manager, name = sc.model_name] { return kv_manager->RenderMetrics(name); };
    sc.degraded = [kv_manager, decoders_down]() -> std::string {
      std::vector<std::string> why;
      const int32_t up = kv_manager->num_pools_alive();
      const int32_t all = static_cast<int32_t>(kv_manager->pool_stats().size());
      if (up != all) why.push_back(absl::StrCat(all - up, " of ", all, " attention workers down"));
      if (decoders_down) {
        if (std::string d = decoders_down(); !d.empty()) why.push_back(std::move(d));
      }
      return absl::StrJoin(why, "; ");
    };
    sc.kv_up = [kv_manager] { return kv_manager->num_pools_alive() > 0; };
  }
  CompletionService service(engine, m.tokenizer.get(), sc);
  api::HttpServerConfig hc;
  hc.host = a.Str("host", "127.0.0.1");
  hc.port = port;
  KVASIR_ASSIGN_OR_FAIL(api_key, ApiKeyFromArgs(a));
  hc.api_key = api_key;
  api::HttpServer http(&service, hc);
  auto bound = http.Start();
  if (!bound.ok()) return Fail(bound.status());
  std::fprintf(stderr, "kvasir: serving %s (chat format %s) on http://%s:%d\n",
               sc.model_name.c_str(), api::ChatFormatName(sc.chat_format), hc.host.c_str(),
               *bound);
  std::printf("%d\n", *bound);
  transport::CompletionGrpcServer completion(&service, transport::GrpcAuth(api_key, "API key"));
  transport::GrpcServer grpc_server;
  if (grpc_port >= 0) {
    extra.insert(extra.begin(), completion.service());
    auto gbound = grpc_server.Start(hc.host, grpc_port, extra);
    if (!gbound.ok()) return Fail(gbound.status());
    std::fprintf(stderr, "kvasir: gRPC on %s:%d\n", hc.host.c_str(), *gbound);
    std::printf("%d\n", *gbound);
  }
  std::fflush(stdout);
  signals.Wait();
  before_stop();  // aborts in-flight requests, so their handlers return
  grpc_server.Stop();
  http.Stop();
  return 0;
}

absl::StatusOr<EngineConfig> EngineConfigFromArgs(const Args& a) {
  EngineConfig ec;
  ASSIGN_OR_RETURN(ec.max_num_seqs, PositiveFlag(a, "max-num-seqs", 64));
  ASSIGN_OR_RETURN(ec.max_num_batched_tokens, PositiveFlag(a, "max-num-batched-tokens", 512));
  ASSIGN_OR_RETURN(ec.max_waiting, PositiveFlag(a, "max-waiting", 1024));
  return ec;
}

const cli::FlagSpec kDecoderKvMemoryFlag = {
    "decoder-kv-memory", true,
    "cuda: MiB of GPU memory for this decoder's own KV, the hybrid executor: each sequence's "
    "first tokens on the GPU while they fit, the rest on the attention workers, merged by lse "
    "(0: sized by --gpu-memory-utilization; default: all KV on the attention workers)"};

// --decoder-kv-memory into eo (the hybrid executor), or nothing when absent.
absl::Status HybridFromArgs(const Args& a, EngineOptions* eo) {
  if (!a.Has("decoder-kv-memory")) return absl::OkStatus();
  ASSIGN_OR_RETURN(const double mb, a.Float("decoder-kv-memory", 0.0));
  if (!(mb >= 0.0 && mb <= double(1 << 24))) {
    return absl::InvalidArgumentError("--decoder-kv-memory must be in [0, 16777216] MiB");
  }
  if (eo->device != "cuda") {
    return absl::InvalidArgumentError("--decoder-kv-memory needs --device cuda");
  }
  eo->hybrid_kv = true;
  eo->decoder_kv_memory_mb = mb;
  return absl::OkStatus();
}

const std::vector<cli::FlagSpec> kEngineFlags = {
    {"max-num-seqs", true, "sequences per step (default 64)"},
    {"max-num-batched-tokens", true, "tokens per step (default 512)"},
    {"max-waiting", true, "queued requests before 429 (default 1024)"},
};

std::vector<cli::FlagSpec> Join(std::vector<std::vector<cli::FlagSpec>> parts) {
  std::vector<cli::FlagSpec> all;
  for (auto& p : parts) all.insert(all.end(), p.begin(), p.end());
  return With(all);
}

absl::StatusOr<Args> ParseOrHelp(int argc, char** argv, const std::string& cmd,
                                 const std::vector<cli::FlagSpec>& specs, bool* help) {
  ASSIGN_OR_RETURN(Args a, Args::Parse(argc, argv, 2, specs));
  *help = a.Has("help");
  if (*help) std::fputs(cli::Usage(cmd, specs).c_str(), stdout);
  InitLogging(a.Str("log-level", "info"));
  return a;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
int ServeMain(int argc, char** argv) {
  auto specs = Join({FrontEndFlags(), kEngineFlags,
                     {{"kv-blocks", true,
                       "KV blocks of 16 tokens in the pool, over all shards (default: 64 full "
                       "contexts, at most 4 GiB)"},
                      {"attention-shards", true,
                       "split the KV pool over N in-process attention workers under the KV "
                       "manager, as a cluster does (default: one local pool; kv_policy eviction "
                       "needs the local pool)"},
                      {"attention-workers", true,
                       "host:N with --device cuda: the hybrid executor in one process, each "
                       "sequence's first tokens in the GPU pool (--decoder-kv-memory) and the "
                       "rest in N in-process host attention workers under the KV manager"},
                      kDecoderKvMemoryFlag,
                      {"grpc-port", true,
                       "also serve kvasir.v1.Completion over gRPC on this port (0: a free one, "
                       "printed as a second stdout line; default: off)"}}});
  bool help = false;
  KVASIR_ASSIGN_OR_FAIL(a, ParseOrHelp(argc, argv, "serve", specs, &help));
  if (help) return 0;
  KVASIR_ASSIGN_OR_FAIL(eo, EngineOptionsFromArgs(a));
  KVASIR_ASSIGN_OR_FAIL(ec, EngineConfigFromArgs(a));
  KVASIR_ASSIGN_OR_FAIL(grpc_port, PortFlag(a, "grpc-port", -1, -1));
  KVASIR_ASSIGN_OR_FAIL(shards, PositiveFlag(a, "attention-shards", 1));
  if (a.Has("attention-workers")) {
    const std::string w = a.Str("attention-workers", "");
    int64_t n = 0;
    if (a.Has("attention-shards") || w.rfind("host:", 0) != 0 ||
        !absl::SimpleAtoi(w.substr(5), &n) || n < 1 || n > 64) {
      return Fail(absl::InvalidArgumentError(
          "--attention-workers takes host:N (1 <= N <= 64), without --attention-shards"));
    }
    if (eo.device != "cuda") {
      return Fail(absl::InvalidArgumentError("--attention-workers host:N needs --device cuda"));
    }
    shards = static_cast<int>(n);
    eo.hybrid_kv = true;  // the GPU share: --decoder-kv-memory, else --gpu-memory-utilization
  }
  if (absl::Status st = HybridFromArgs(a, &eo); !st.ok()) return Fail(st);
  if (eo.hybrid_kv && !a.Has("attention-workers")) {
    return Fail(absl::InvalidArgumentError("--decoder-kv-memory needs --attention-workers host:N"));
  }
  KVASIR_ASSIGN_OR_FAIL(blocks, a.Int("kv-blocks", 0));
  if (blocks < 0) return Fail(absl::InvalidArgumentError("--kv-blocks must be >= 0"));
  if (shards > 64) return Fail(absl::InvalidArgumentError("--attention-shards must be <= 64"));
  eo.kv_blocks = blocks;
  eo.kv_contexts = 64;                  // default pool: 64 full contexts,
  eo.kv_max_bytes = int64_t{4} << 30;   // capped at 4 GiB of K+V
  if (!a.Has("attention-shards") && !a.Has("attention-workers")) {
    // One KV pool next to the weights: on the GPU (--gpu-memory-utilization sizes it unless
    // --kv-blocks does) or in host memory for the CPU; attention runs over it in process, and
    // kv_policy eviction works there. With --attention-shards the KV goes to in-process
    // attention shards under the KV manager instead, as in a cluster (the path below).
    eo.max_num_seqs = std::max(ec.max_num_seqs, 1);
    KVASIR_ASSIGN_OR_FAIL(gm, CreateLocalModel(eo));
    Engine engine(gm->runner.get(), ec);
    SignalWaiter signals;
    engine.Start();
    return RunFrontEnd(a, *gm, &engine, grpc_port, gm->runner->kv()->SupportsKvPolicies(), {},
                       signals, [&] { engine.Stop(); });
  }
  eo.local_kv = false;
  KVASIR_ASSIGN_OR_FAIL(m, CreateLocalModel(eo));
  const ModelConfig& c = m->weights->config;
  KVASIR_ASSIGN_OR_FAIL(total, KvPoolBlocks(c, eo));

  // Attention workers in this process, reached by function calls.
  std::vector<std::unique_ptr<AttentionShard>> owned;
  std::vector<AttentionShard*> ptrs;
  std::vector<std::string> names;
  for (int i = 0; i < shards; ++i) {
    owned.push_back(std::make_unique<AttentionShard>(ShapeOf(c), eo.block_size, total / shards,
                                                     m->backend.get(), eo.kv_dtype_or_default()));
    ptrs.push_back(owned.back().get());
    names.push_back(absl::StrCat("in-process-", i));
  }
  // The router's KV manager over them, as in a cluster (one decoder here).
  sched::SystemClock clock;
  KvManager directory(static_cast<int64_t>(c.num_layers) * c.num_kv_heads, eo.block_size, &clock);
  std::vector<std::unique_ptr<InProcessPool>> pools;
  for (int i = 0; i < shards; ++i) {
    pools.push_back(std::make_unique<InProcessPool>(ptrs[i]));
    directory.AddPool(names[i], owned[i]->Info().num_blocks, pools.back().get());
  }
  InProcessLinks links(names, ptrs);
  DistributedAttention attention(ShapeOf(c), &directory, links.Resolver());
  KVASIR_ASSIGN_OR_FAIL(runner, CreateRunnerOver(*m, eo, &attention));
  Engine engine(runner.get(), ec);
  SPDLOG_INFO("KV pool: {} blocks of {} tokens ({}) over {} in-process attention shard(s)",
              total / shards * shards, eo.block_size, KvDTypeName(eo.kv_dtype_or_default()),
              shards);
  SignalWaiter signals;
  engine.Start();
  return RunFrontEnd(a, *m, &engine, grpc_port, false, {}, signals, [&] { engine.Stop(); },
                     &directory);
}

// ---------------------------------------------------------------------------------------------
int RouterMain(int argc, char** argv) {
  auto specs = Join({FrontEndFlags(), kClusterSecretFlags,
                     {{"grpc-port", true,
                       "gRPC port: kvasir.v1.Completion for clients, KvDirectory for decoders "
                       "(default 0: a free one, printed as the second stdout line)"},
                      {"decoders", true, "decoder workers HOST:PORT[,HOST:PORT...]"},
                      {"attention", true, "attention workers HOST:PORT[,HOST:PORT...]"},
                      {"placement", true,
                       "least_loaded (default: fewest outstanding tokens), least_requests, "
                       "round_robin"},
                      {"connect-timeout", true,
                       "seconds to wait for the attention workers (default 60)"},
                      {"migration-limit", true,
                       "times a stream whose decoder dies is resumed on another one from the "
                       "tokens already sent (default 3; 0: it fails)"}}});
  bool help = false;
  KVASIR_ASSIGN_OR_FAIL(a, ParseOrHelp(argc, argv, "router", specs, &help));
  if (help) return 0;
  // The cluster's attention workers keep every token (no kv_policy eviction there yet).
  KVASIR_ASSIGN_OR_FAIL(router_kv_policy, KvPolicyFromArgs(a));
  if (absl::Status st = CheckKvPolicyDefault(router_kv_policy, false); !st.ok()) return Fail(st);
  KVASIR_ASSIGN_OR_FAIL(eo, EngineOptionsFromArgs(a));
  KVASIR_ASSIGN_OR_FAIL(grpc_port, PortFlag(a, "grpc-port", 0, 0));
  KVASIR_ASSIGN_OR_FAIL(decoders, AddressList(a, "decoders"));
  KVASIR_ASSIGN_OR_FAIL(attention, AddressList(a, "attention"));
  KVASIR_ASSIGN_OR_FAIL(timeout, PositiveFlag(a, "connect-timeout", 60));
  KVASIR_ASSIGN_OR_FAIL(migration_limit, a.Int("migration-limit", 3));
  if (migration_limit < 0 || migration_limit > 100) {
    return Fail(absl::InvalidArgumentError("--migration-limit must be in [0, 100]"));
  }
  KVASIR_ASSIGN_OR_FAIL(policy, sched::MakePlacementPolicy(a.Str("placement", "least_loaded")));
  KVASIR_ASSIGN_OR_FAIL(cluster_auth, ClusterAuthFromArgs(a));
  eo.config_only = true;
  KVASIR_ASSIGN_OR_FAIL(m, CreateLocalModel(eo));
  const ModelConfig& c = m->weights->config;

  transport::KvDirectoryHost directory(attention, ShapeOf(c), cluster_auth);
  if (absl::Status s = directory.Connect(std::chrono::seconds(timeout)); !s.ok()) return Fail(s);
  directory.StartMonitor();  // dead and frozen workers, expired decoder leases
  transport::RemoteDecoders remote(decoders, c, std::move(policy),
                                   [&] { return directory.Usage(); }, cluster_auth,
                                   static_cast<int>(migration_limit));
  SignalWaiter signals;
  remote.Start();
  return RunFrontEnd(a, *m, &remote, grpc_port, false, {directory.service()}, signals,
                     [&] { remote.Stop(); }, directory.manager(),
                     [&] { return remote.Unreachable(); });
}

// ---------------------------------------------------------------------------------------------
int DecoderMain(int argc, char** argv) {
  auto specs = Join({kEngineFlags, kClusterSecretFlags,
                     {kDecoderKvMemoryFlag,
                      {"host", true, "listen address (default 127.0.0.1)"},
                      {"grpc-port", true, "gRPC port (default 0: a free one, printed)"},
                      {"router", true, "the router's gRPC address HOST:PORT (KV directory)"},
                      {"decoder-id", true,
                       "this decoder's number, unique in the cluster (default 0)"},
                      {"attention-timeout-ms", true,
                       "deadline of one attention step on a worker; a frozen worker's sequences "
                       "are recomputed elsewhere after it (default 10000)"},
                      {"attention-data-plane", true,
                       "tcp (default: the workers' TCP data port, one connection each) or grpc "
                       "(a unary call per layer)"},
                      {"attention-wire-dtype", true,
                       "fp32 (default) or bf16: q, k, v and attention outputs on the TCP wire"}}});
  bool help = false;
  KVASIR_ASSIGN_OR_FAIL(a, ParseOrHelp(argc, argv, "decoder", specs, &help));
  if (help) return 0;
  KVASIR_ASSIGN_OR_FAIL(eo, EngineOptionsFromArgs(a));
  KVASIR_ASSIGN_OR_FAIL(ec, EngineConfigFromArgs(a));
  KVASIR_ASSIGN_OR_FAIL(grpc_port, PortFlag(a, "grpc-port", 0, 0));
  KVASIR_ASSIGN_OR_FAIL(router, AddressList(a, "router"));
  KVASIR_ASSIGN_OR_FAIL(id, a.Int("decoder-id", 0));
  KVASIR_ASSIGN_OR_FAIL(attention_timeout_ms, a.Int("attention-timeout-ms", 10000));
  if (attention_timeout_ms < 100) {
    return Fail(absl::InvalidArgumentError("--attention-timeout-ms must be >= 100"));
  }
  if (router.size() != 1) return Fail(absl::InvalidArgumentError("--router takes one address"));
  if (id < 0 || id >= (int64_t{1} << 22)) {
    return Fail(absl::InvalidArgumentError("--decoder-id must be in [0, 4194304)"));
  }
  KVASIR_ASSIGN_OR_FAIL(cluster_auth, ClusterAuthFromArgs(a));
  if (absl::Status st = HybridFromArgs(a, &eo); !st.ok()) return Fail(st);
  eo.local_kv = false;
  eo.need_tokenizer = false;
  KVASIR_ASSIGN_OR_FAIL(m, CreateLocalModel(eo));
  const ModelConfig& c = m->weights->config;
  transport::GrpcSegmentDirectory directory(router[0], cluster_auth, id);
  directory.Start();  // restart notice, then the lease's heartbeat
  transport::DataPlaneOptions plane;
  const std::string plane_flag = a.Str("attention-data-plane", "tcp");
  const std::string wire_flag = a.Str("attention-wire-dtype", "fp32");
  if (plane_flag != "tcp" && plane_flag != "grpc") {
    return Fail(absl::InvalidArgumentError("--attention-data-plane must be tcp or grpc"));
  }
  if (wire_flag != "fp32" && wire_flag != "bf16") {
    return Fail(absl::InvalidArgumentError("--attention-wire-dtype must be fp32 or bf16"));
  }
  plane.tcp = plane_flag == "tcp";
  plane.dtype = wire_flag == "bf16" ? transport::WireDType::kBF16 : transport::WireDType::kF32;
  transport::GrpcAttentionLinks links(ShapeOf(c), cluster_auth,
                                      std::chrono::milliseconds(attention_timeout_ms), plane);
  DistributedAttention attention(ShapeOf(c), &directory, links.Resolver(), id);
  KVASIR_ASSIGN_OR_FAIL(runner, CreateRunnerOver(*m, eo, &attention));
  Engine engine(runner.get(), ec);
  transport::DecoderGrpcService service(&engine, cluster_auth);
  SignalWaiter signals;
  engine.Start();
  transport::GrpcServer server;
  const std::string host = a.Str("host", "127.0.0.1");
  auto bound = server.Start(host, grpc_port, {service.service()});
  if (!bound.ok()) return Fail(bound.status());
  std::fprintf(stderr, "kvasir: decoder %lld serving %s on %s:%d (router %s)\n",
               static_cast<long long>(id), c.name.c_str(), host.c_str(), *bound,
               router[0].c_str());
  std::printf("%d\n", *bound);
  std::fflush(stdout);
  signals.Wait();
  engine.Stop();
  server.Stop();
  return 0;
}

// ---------------------------------------------------------------------------------------------
int AttentionMain(int argc, char** argv) {
  auto specs = Join({kClusterSecretFlags,
                    {{"host", true, "listen address (default 127.0.0.1)"},
                     {"grpc-port", true, "gRPC port (default 0: a free one, printed)"},
                     {"data-port", true,
                      "TCP data-plane port decoders attend over (default 0: a free one, "
                      "advertised through the gRPC control service; -1: none, gRPC only)"},
                     {"kv-blocks", true,
                      "KV blocks of 16 tokens in this worker's pool (default: 64 full contexts, "
                      "at most 4 GiB)"},
                     {"kv-memory-mb", true,
                      "size the pool by memory instead: MiB of K+V (in --kv-cache-dtype)"}}});
  bool help = false;
  KVASIR_ASSIGN_OR_FAIL(a, ParseOrHelp(argc, argv, "attention", specs, &help));
  if (help) return 0;
  KVASIR_ASSIGN_OR_FAIL(eo, EngineOptionsFromArgs(a));
  KVASIR_ASSIGN_OR_FAIL(grpc_port, PortFlag(a, "grpc-port", 0, 0));
  KVASIR_ASSIGN_OR_FAIL(blocks, a.Int("kv-blocks", 0));
  KVASIR_ASSIGN_OR_FAIL(memory_mb, a.Int("kv-memory-mb", 0));
  KVASIR_ASSIGN_OR_FAIL(cluster_auth, ClusterAuthFromArgs(a));
  if (blocks < 0 || memory_mb < 0 || (blocks > 0 && memory_mb > 0)) {
    return Fail(absl::InvalidArgumentError(
        "give at most one of --kv-blocks and --kv-memory-mb, each >= 0"));
  }
  eo.kv_blocks = blocks;
  eo.kv_contexts = 64;
  eo.kv_max_bytes = int64_t{4} << 30;
  eo.config_only = true;
  eo.need_tokenizer = false;
  KVASIR_ASSIGN_OR_FAIL(m, CreateLocalModel(eo));
  const ModelConfig& c = m->weights->config;
  if (memory_mb > 0) {
    eo.kv_blocks = (memory_mb << 20) / KvBytesPerBlock(c, eo);
    if (eo.kv_blocks < 1) return Fail(absl::InvalidArgumentError("--kv-memory-mb is too small"));
  }
  KVASIR_ASSIGN_OR_FAIL(total, KvPoolBlocks(c, eo));
  // The worker's own device is the CPU: --kv-cache-dtype alone decides (default fp32).
  const KvDType kv_dtype = eo.kv_dtype.value_or(KvDType::kF32);
  if (eo.device != "cpu") {
    return Fail(absl::InvalidArgumentError(
        "attention workers run on the CPU (--device cpu); give the decoders --device cuda"));
  }
  AttentionShard shard(ShapeOf(c), eo.block_size, total, m->backend.get(), kv_dtype);
  const std::string host = a.Str("host", "127.0.0.1");
  KVASIR_ASSIGN_OR_FAIL(data_port_flag, a.Int("data-port", 0));
  if (data_port_flag < -1 || data_port_flag > 65535) {
    return Fail(absl::InvalidArgumentError("--data-port must be -1 or in [0, 65535]"));
  }
  transport::AttentionTcpServer data_plane(&shard, cluster_auth.token());
  int data_port = 0;
  if (data_port_flag >= 0) {
    auto bound_data = data_plane.Start(host, static_cast<int>(data_port_flag));
    if (!bound_data.ok()) return Fail(bound_data.status());
    data_port = *bound_data;
  }
  transport::AttentionGrpcServices services(&shard, cluster_auth, data_port);
  SignalWaiter signals;
  transport::GrpcServer server;
  auto bound = server.Start(host, grpc_port, services.services());
  if (!bound.ok()) return Fail(bound.status());
  std::fprintf(stderr,
               "kvasir: attention worker for %s on %s:%d (data plane: %s), %lld KV blocks of "
               "%d tokens (%s)\n",
               c.name.c_str(), host.c_str(), *bound,
               data_port > 0 ? absl::StrCat("TCP port ", data_port).c_str() : "gRPC only",
               static_cast<long long>(total), eo.block_size,
               std::string(KvDTypeName(kv_dtype)).c_str());
  std::printf("%d\n", *bound);
  std::fflush(stdout);
  signals.Wait();
  server.Stop();
  data_plane.Stop();
  return 0;
}

}  // namespace kvasir

#include "tools/cluster_launcher.h"

#include <grpcpp/grpcpp.h>
#include <httplib.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/logging.h"
#include "kvcache/block_pool.h"
#include "common/secret.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace kvasir {

namespace {

using Clock = std::chrono::steady_clock;

constexpr char kWorkerHost[] = "127.0.0.1";  // internal gRPC servers: loopback only
constexpr int kMaxRoleCount = 64;
constexpr auto kStopGrace = std::chrono::seconds(10);
constexpr int kReadyPollMs = 100;

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "kvasir cluster: error: %s\n", std::string(s.message()).c_str());
  return s.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

absl::StatusOr<int64_t> IntIn(const cli::Args& a, const std::string& name, int64_t def, int64_t lo,
                              int64_t hi) {
  ASSIGN_OR_RETURN(int64_t v, a.Int(name, def));
  if (a.Has(name) && (v < lo || v > hi)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, " must be in [", lo, ", ", hi, "], got ", v));
  }
  return v;
}

std::string DescribeStatus(int status) {
  if (WIFEXITED(status)) return absl::StrCat("exited with status ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const char* name = strsignal(WTERMSIG(status));
    return absl::StrCat("was killed by signal ", WTERMSIG(status), " (", name ? name : "?", ")");
  }
  return absl::StrCat("changed state (wait status ", status, ")");
}

// Holds the sockets it binds until destroyed, so every port it hands out is distinct and was
// free a moment ago. A child binds it right after; the window is short and on loopback.
class PortPicker {
 public:
  ~PortPicker() {
    for (int fd : fds_) close(fd);
  }

  absl::StatusOr<int> Pick(const std::string& host, const std::vector<int>& avoid) {
    for (int attempt = 0; attempt < 16; ++attempt) {
      ASSIGN_OR_RETURN(int port, Bind(host, 0));
      if (std::find(avoid.begin(), avoid.end(), port) == avoid.end()) return port;
    }
    return absl::ResourceExhaustedError("cannot find a free port on " + host);
  }

  // Checks that a given port is free now, so a busy one is reported before anything starts.
  absl::Status Reserve(const std::string& host, int port, const char* flag) {
    absl::StatusOr<int> bound = Bind(host, port);
    if (!bound.ok() && absl::IsUnavailable(bound.status())) {
      return absl::FailedPreconditionError(
          absl::StrCat("--", flag, " ", port, ": ", JoinHostPort(host, port), " is in use"));
    }
    return bound.status();
  }

 private:
  // Binds a socket to host:port (0: any free port) and returns the port it got;
  // Unavailable when the address is in use.
  absl::StatusOr<int> Bind(const std::string& host, int want) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    addrinfo* res = nullptr;
    const std::string service = std::to_string(want);
    if (int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &res);
        rc != 0) {
      return absl::InvalidArgumentError(absl::StrCat("--host ", host, ": ", gai_strerror(rc)));
    }
    std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> guard(res, freeaddrinfo);
    int fd = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, res->ai_protocol);
    if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
    fds_.push_back(fd);
    if (want != 0) {
      // As servers bind: a port left in TIME_WAIT by an earlier run counts as free. Not for
      // port 0, where it would let the kernel hand out a port another of ours holds.
      int one = 1;
      setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    }
    if (bind(fd, res->ai_addr, res->ai_addrlen) != 0) {
      if (errno == EADDRINUSE) return absl::UnavailableError("in use");
      return absl::InvalidArgumentError(
          absl::StrCat("cannot bind a port on --host ", host, ": ", std::strerror(errno)));
    }
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
      return absl::InternalError(absl::StrCat("getsockname: ", std::strerror(errno)));
    }
    return ss.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port)
                                    : ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  }

  std::vector<int> fds_;
};

absl::StatusOr<ClusterPorts> PickPorts(const ClusterOptions& o) {
  PortPicker picker;
  ClusterPorts p;
  std::vector<int> taken;
  for (int fixed : {o.port, o.grpc_port}) {
    if (fixed != 0) taken.push_back(fixed);
  }
  auto pick = [&](const std::string& host) -> absl::StatusOr<int> {
    ASSIGN_OR_RETURN(int port, picker.Pick(host, taken));
    taken.push_back(port);
    return port;
  };
  if (o.port != 0) {
    RETURN_IF_ERROR(picker.Reserve(o.host, o.port, "port"));
    p.router_http = o.port;
  } else {
    ASSIGN_OR_RETURN(p.router_http, pick(o.host));
  }
  if (o.grpc_port != 0) {
    RETURN_IF_ERROR(picker.Reserve(o.host, o.grpc_port, "grpc-port"));
    p.router_grpc = o.grpc_port;
  } else {
    ASSIGN_OR_RETURN(p.router_grpc, pick(o.host));
  }
  for (int i = 0; i < o.attention; ++i) {
    ASSIGN_OR_RETURN(int port, pick(kWorkerHost));
    p.attention.push_back(port);
  }
  for (int i = 0; i < o.decoders; ++i) {
    ASSIGN_OR_RETURN(int port, pick(kWorkerHost));
    p.decoders.push_back(port);
  }
  return p;
}

enum class Health { kUnreachable, kAnswered, kServing };

// grpc.health.v1 Check of service "" at `target`: kServing, kAnswered (the server is up and
// answered anything else), or kUnreachable; `why` says what came back when not kServing. A
// fresh channel per check: a reused one would sit out gRPC's reconnect backoff and DNS
// re-resolution delays after the refused connections of a worker that is still loading.
Health CheckGrpcHealth(const std::string& target, std::string* why) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  auto stub = grpc::health::v1::Health::NewStub(
      grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(1));
  grpc::health::v1::HealthCheckRequest req;
  grpc::health::v1::HealthCheckResponse resp;
  grpc::Status s = stub->Check(&ctx, req, &resp);
  if (!s.ok()) {
    *why = absl::StrCat("gRPC status ", s.error_code(), ": ", s.error_message());
    return s.error_code() == grpc::StatusCode::UNAVAILABLE ||
                   s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED
               ? Health::kUnreachable
               : Health::kAnswered;
  }
  if (resp.status() == grpc::health::v1::HealthCheckResponse::SERVING) return Health::kServing;
  *why = absl::StrCat("health status ",
                      grpc::health::v1::HealthCheckResponse::ServingStatus_Name(resp.status()));
  return Health::kAnswered;
}

bool CheckHttpHealth(const std::string& host, int port, std::string* why) {
  httplib::Client cli(host, port);
  cli.set_connection_timeout(1, 0);
  cli.set_read_timeout(2, 0);
  auto r = cli.Get("/health");
  if (!r) {
    *why = "HTTP " + httplib::to_string(r.error());
    return false;
  }
  if (r->status != 200) {
    *why = absl::StrCat("HTTP status ", r->status);
    return false;
  }
  return true;
}

class Launcher {
 public:
  Launcher(const ClusterOptions& o, const sigset_t& child_mask, int sfd)
      : o_(o), child_mask_(child_mask), sfd_(sfd) {}

  int Run() {
    auto ports = PickPorts(o_);
    if (!ports.ok()) return Fail(ports.status());
    ports_ = *ports;
    for (ChildSpec& spec : BuildChildCommands(o_, ports_)) {
      auto c = std::make_unique<Child>();
      c->spec = std::move(spec);
      children_.push_back(std::move(c));
    }
    deadline_ = Clock::now() + std::chrono::seconds(o_.ready_timeout_s);

    // Attention workers must serve before the router connects to them, the router's gRPC
    // server must answer before decoders register with it, and the router's /health turns 200
    // only once a decoder is reachable.
    Outcome out = StartStage(ClusterRole::kAttention, Health::kServing);
    if (out == Outcome::kReady) out = StartStage(ClusterRole::kRouter, Health::kAnswered);
    if (out == Outcome::kReady) out = StartStage(ClusterRole::kDecoder, Health::kServing);
    if (out == Outcome::kReady) {
      const std::string host = ConnectHost(o_.host);
      out = WaitUntil({{absl::StrCat("router (HTTP GET http://",
                                     JoinHostPort(host, ports_.router_http), "/health)"),
                        [this, host](std::string* why) {
                          return CheckHttpHealth(host, ports_.router_http, why);
                        }}});
    }
    if (out != Outcome::kReady) return Finish(out);

    std::printf(
        "kvasir cluster ready: http://%s (router gRPC %s), %d decoder%s, %d attention worker%s\n",
        JoinHostPort(o_.host, ports_.router_http).c_str(),
        JoinHostPort(o_.host, ports_.router_grpc).c_str(), o_.decoders, o_.decoders == 1 ? "" : "s",
        o_.attention, o_.attention == 1 ? "" : "s");
    std::fflush(stdout);
    supervising_ = o_.restart;
    while (stop_signal_ == 0 && exited_ == nullptr) {
      Poll(MsUntilNextRestart());
      RestartDue();
    }
    return Finish(stop_signal_ != 0 ? Outcome::kStopped : Outcome::kChildExited);
  }

 private:
  struct Child {
    ChildSpec spec;
    pid_t pid = -1;
    bool running = false;
    int status = 0;
    Clock::time_point started;
    std::optional<Clock::time_point> restart_at;  // set while it waits to be started again
    std::chrono::seconds backoff{1};
    int restarts = 0;
  };

  int MsUntilNextRestart() const {
    std::optional<Clock::time_point> next;
    for (const auto& c : children_) {
      if (c->restart_at && (!next || *c->restart_at < *next)) next = c->restart_at;
    }
    if (!next) return -1;
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(*next - Clock::now());
    return static_cast<int>(std::clamp<int64_t>(ms.count(), 0, 60000));
  }

  void RestartDue() {
    for (auto& c : children_) {
      if (!c->restart_at || Clock::now() < *c->restart_at || stop_signal_ != 0) continue;
      c->restart_at.reset();
      ++c->restarts;
      if (absl::Status s = Spawn(*c); !s.ok()) {
        std::fprintf(stderr, "kvasir cluster: cannot restart %s: %s\n", c->spec.name.c_str(),
                     std::string(s.message()).c_str());
        c->restart_at = Clock::now() + c->backoff;
        continue;
      }
      std::fprintf(stderr, "kvasir cluster: restarted %s (pid %d, restart %d)\n",
                   c->spec.name.c_str(), c->pid, c->restarts);
      std::fflush(stderr);  // it may be a file (buffered), and nothing else may come for long
    }
  }

  struct Check {
    std::string what;
    std::function<bool(std::string* why)> ok;
  };

  enum class Outcome { kReady, kStopped, kChildExited, kTimedOut, kSpawnFailed };

  Outcome StartStage(ClusterRole role, Health want) {
    std::vector<Check> checks;
    for (auto& c : children_) {
      if (c->spec.role != role) continue;
      if (absl::Status s = Spawn(*c); !s.ok()) {
        std::fprintf(stderr, "kvasir cluster: cannot start %s: %s\n", c->spec.name.c_str(),
                     std::string(s.message()).c_str());
        return Outcome::kSpawnFailed;
      }
      Child* child = c.get();
      checks.push_back({absl::StrCat(c->spec.name, " (gRPC health at ", c->spec.grpc_target, ")"),
                        [child, want](std::string* why) {
                          Health h = CheckGrpcHealth(child->spec.grpc_target, why);
                          return h == Health::kServing || (want == Health::kAnswered && h == want);
                        }});
    }
    return WaitUntil(std::move(checks));
  }

  absl::Status Spawn(Child& c) {
    std::vector<char*> argv;
    for (std::string& a : c.spec.argv) argv.push_back(a.data());
    argv.push_back(nullptr);
    // The environment is built before fork: the child may only make async-signal-safe calls.
    std::vector<std::string> env_strings;
    for (char** e = environ; *e != nullptr; ++e) {
      const std::string_view entry(*e);
      const std::string_view name = entry.substr(0, entry.find('='));
      const bool replaced = std::any_of(c.spec.env.begin(), c.spec.env.end(), [&](const std::string& x) {
        return std::string_view(x).substr(0, x.find('=')) == name;
      });
      if (!replaced) env_strings.emplace_back(entry);
    }
    env_strings.insert(env_strings.end(), c.spec.env.begin(), c.spec.env.end());
    std::vector<char*> envp;
    for (std::string& e : env_strings) envp.push_back(e.data());
    envp.push_back(nullptr);
    const char* exe = o_.exe.c_str();
    const pid_t parent = getpid();
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    std::fflush(nullptr);
    pid_t pid = fork();
    if (pid < 0) return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
    if (pid == 0) {
      // Async-signal-safe calls only from here to exec: the launcher has gRPC threads.
      // The child gets SIGTERM when the launcher dies, even by SIGKILL: no orphaned workers.
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (getppid() != parent) _exit(127);
      sigaction(SIGPIPE, &dfl, nullptr);
      sigprocmask(SIG_SETMASK, &child_mask_, nullptr);
      // What the roles print on stdout (their ports) goes to stderr with their logs: the
      // launcher's stdout carries only its ready line.
      dup2(2, 1);
      execve(exe, argv.data(), envp.data());
      static constexpr char kMsg[] = "kvasir cluster: exec of the kvasir binary failed\n";
      ssize_t ignored = write(2, kMsg, sizeof(kMsg) - 1);
      (void)ignored;
      _exit(127);
    }
    c.pid = pid;
    c.running = true;
    c.started = Clock::now();
    SPDLOG_INFO("cluster: started {} (pid {}): {}", c.spec.name, pid,
                absl::StrJoin(c.spec.argv.begin() + 1, c.spec.argv.end(), " "));
    return absl::OkStatus();
  }

  // Waits up to timeout_ms (-1: no limit) for a signal or a child's exit, then takes every
  // pending signal and reaps every exited child.
  void Poll(int timeout_ms) {
    pollfd p{sfd_, POLLIN, 0};
    poll(&p, 1, timeout_ms);
    signalfd_siginfo si;
    while (read(sfd_, &si, sizeof(si)) == static_cast<ssize_t>(sizeof(si))) {
      if (si.ssi_signo == SIGINT || si.ssi_signo == SIGTERM) {
        if (stop_signal_ == 0) {
          stop_signal_ = static_cast<int>(si.ssi_signo);
          std::fprintf(stderr, "kvasir cluster: %s, stopping the cluster\n",
                       strsignal(stop_signal_));
        }
        ++stop_signals_;
      }
    }
    int status = 0;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
      for (auto& c : children_) {
        if (c->pid != pid || !c->running) continue;
        c->running = false;
        c->status = status;
        if (!stopping_ && stop_signal_ == 0) {
          std::fprintf(stderr, "kvasir cluster: %s (pid %d) stopped unexpectedly: it %s\n",
                       c->spec.name.c_str(), pid, DescribeStatus(status).c_str());
          if (supervising_) {
            // A child that ran a good while gets the short backoff again.
            if (Clock::now() - c->started > std::chrono::minutes(1)) c->backoff = std::chrono::seconds(1);
            c->restart_at = Clock::now() + c->backoff;
            std::fprintf(stderr, "kvasir cluster: restarting %s in %lld s; the rest keeps serving\n",
                         c->spec.name.c_str(), static_cast<long long>(c->backoff.count()));
            c->backoff = std::min<std::chrono::seconds>(c->backoff * 2, std::chrono::seconds(30));
          } else if (exited_ == nullptr) {
            exited_ = c.get();
          }
        } else {
          SPDLOG_INFO("cluster: {} (pid {}) {}", c->spec.name, pid, DescribeStatus(status));
        }
      }
    }
  }

  Outcome WaitUntil(std::vector<Check> checks) {
    std::vector<bool> done(checks.size(), false);
    std::vector<std::string> why(checks.size());
    const auto t0 = Clock::now();
    while (true) {
      Poll(0);
      if (stop_signal_ != 0) return Outcome::kStopped;
      if (exited_ != nullptr) return Outcome::kChildExited;
      bool all = true;
      for (size_t i = 0; i < checks.size(); ++i) {
        if (done[i]) continue;
        done[i] = checks[i].ok(&why[i]);
        if (done[i]) {
          SPDLOG_INFO("cluster: {} ready after {:.1f} s", checks[i].what,
                      std::chrono::duration<double>(Clock::now() - t0).count());
        }
        all = all && done[i];
      }
      if (all) return Outcome::kReady;
      if (Clock::now() >= deadline_) {
        for (size_t i = 0; i < checks.size(); ++i) {
          if (done[i]) continue;
          std::fprintf(stderr, "kvasir cluster: %s not ready after %d s (last check: %s)\n",
                       checks[i].what.c_str(), o_.ready_timeout_s,
                       why[i].empty() ? "no answer" : why[i].c_str());
        }
        return Outcome::kTimedOut;
      }
      Poll(kReadyPollMs);
    }
  }

  // Stops the children in reverse start order: SIGTERM, up to kStopGrace, SIGKILL. A second
  // SIGINT/SIGTERM skips the grace period.
  void StopAll() {
    stopping_ = true;
    for (ClusterRole role :
         {ClusterRole::kDecoder, ClusterRole::kRouter, ClusterRole::kAttention}) {
      std::vector<Child*> group;
      for (auto& c : children_) {
        if (c->spec.role != role || !c->running) continue;
        kill(c->pid, SIGTERM);
        group.push_back(c.get());
      }
      const auto until = Clock::now() + kStopGrace;
      auto any_running = [&] {
        return std::any_of(group.begin(), group.end(), [](Child* c) { return c->running; });
      };
      while (any_running() && stop_signals_ < 2 && Clock::now() < until) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
        Poll(static_cast<int>(std::clamp<int64_t>(left.count(), 1, 1000)));
      }
      for (Child* c : group) {
        if (!c->running) continue;
        std::fprintf(stderr, "kvasir cluster: %s (pid %d) still running, killing it\n",
                     c->spec.name.c_str(), c->pid);
        kill(c->pid, SIGKILL);
        int status = 0;
        while (waitpid(c->pid, &status, 0) < 0 && errno == EINTR) {
        }
        c->running = false;
        c->status = status;
      }
    }
  }

  int Finish(Outcome out) {
    StopAll();
    switch (out) {
      case Outcome::kReady:
      case Outcome::kStopped:
        return 0;
      case Outcome::kChildExited:
      case Outcome::kTimedOut:
      case Outcome::kSpawnFailed:
        break;
    }
    return 1;
  }

  const ClusterOptions& o_;
  const sigset_t child_mask_;  // the signal mask the children start with
  const int sfd_;              // signalfd for SIGINT, SIGTERM, SIGCHLD
  ClusterPorts ports_;
  std::vector<std::unique_ptr<Child>> children_;  // in start order
  Clock::time_point deadline_;
  int stop_signal_ = 0;   // the first SIGINT/SIGTERM, 0 before
  int stop_signals_ = 0;  // how many arrived
  bool stopping_ = false;
  bool supervising_ = false;  // ready, and restarting children that exit
  Child* exited_ = nullptr;  // the first child that exited on its own (not supervising)
};

}  // namespace

const std::vector<cli::FlagSpec>& ClusterFlagSpecs() {
  static const auto* specs = new std::vector<cli::FlagSpec>{
      {"decoders", true, "decoder workers to start (required, >= 1)"},
      {"attention", true, "attention workers to start (required, >= 1)"},
      {"model", true, "model directory (HF or llama2.c layout); default: embedded stories260K"},
      {"load-format", true, "auto (default) or dummy (seeded random weights)"},
      {"dummy-config", true, "config for dummy weights: built-in name or config.json path"},
      {"threads", true, "CPU threads of each process"},
      {"log-level", true, "debug, info (launcher default), warn, error; passed to every process"},
      {"host", true, "router listen address (default 127.0.0.1); workers listen on 127.0.0.1"},
      {"port", true, "router HTTP port (default 8000; 0 picks a free one)"},
      {"grpc-port", true, "router gRPC port (default 0: a free one)"},
      {"kv-blocks", true, "KV blocks of 16 tokens per attention worker (default: theirs)"},
      {"kv-cache-dtype", true,
       "how the attention workers store KV: fp32 or bf16 (default: fp32, bf16 with --device "
       "cuda to match the GPU's own KV rounding)"},
      {"max-num-seqs", true, "sequences per decoder step (default: theirs)"},
      {"max-num-batched-tokens", true, "tokens per decoder step (default: theirs)"},
      {"device", true,
       "the decoders' device: cpu (default) or cuda (dense layers on GPU 0, KV on the host "
       "attention workers)"},
      {"decoder-kv-memory", true,
       "with --device cuda: MiB of each decoder's GPU for its own KV, the hybrid executor (each "
       "sequence's first tokens there, the rest on the attention workers; 0: sized by the "
       "decoder; default: all KV on the attention workers)"},
      {"api-key", true,
       "router requires Authorization: Bearer KEY (visible in ps: prefer --api-key-file or "
       "$KVASIR_API_KEY)"},
      {"api-key-file", true, "read the router's API key from this file"},
      {"cluster-secret-file", true,
       "the secret of the internal gRPC calls (default $KVASIR_CLUSTER_SECRET, else a random "
       "one per launch)"},
      {"ready-timeout", true, "seconds to wait for the whole cluster to be ready (default 120)"},
      {"no-restart", false,
       "stop the whole cluster when a child exits (default: restart it with backoff)"},
      {"help", false, "show this help"},
  };
  return *specs;
}

absl::StatusOr<ClusterOptions> ClusterOptionsFromArgs(const cli::Args& a) {
  ClusterOptions o;
  for (const char* role : {"decoders", "attention"}) {
    if (!a.Has(role)) {
      return absl::InvalidArgumentError(absl::StrCat("--", role, " N is required"));
    }
  }
  ASSIGN_OR_RETURN(int64_t decoders, IntIn(a, "decoders", 1, 1, kMaxRoleCount));
  ASSIGN_OR_RETURN(int64_t attention, IntIn(a, "attention", 1, 1, kMaxRoleCount));
  ASSIGN_OR_RETURN(int64_t port, IntIn(a, "port", 8000, 0, 65535));
  ASSIGN_OR_RETURN(int64_t grpc_port, IntIn(a, "grpc-port", 0, 0, 65535));
  ASSIGN_OR_RETURN(o.kv_blocks, IntIn(a, "kv-blocks", -1, 1, INT32_MAX));
  ASSIGN_OR_RETURN(o.max_num_seqs, IntIn(a, "max-num-seqs", -1, 1, INT32_MAX));
  ASSIGN_OR_RETURN(o.max_num_batched_tokens, IntIn(a, "max-num-batched-tokens", -1, 1, INT32_MAX));
  ASSIGN_OR_RETURN(int64_t ready_timeout, IntIn(a, "ready-timeout", 120, 1, 86400));
  RETURN_IF_ERROR(IntIn(a, "threads", 1, 1, 256).status());
  o.device = a.Str("device", "cpu");
  if (o.device != "cpu" && o.device != "cuda") {
    return absl::InvalidArgumentError("--device must be cpu or cuda");
  }
  if (a.Has("decoder-kv-memory")) {
    ASSIGN_OR_RETURN(const double mb, a.Float("decoder-kv-memory", 0.0));
    if (!(mb >= 0.0 && mb <= double(1 << 24)) || o.device != "cuda") {
      return absl::InvalidArgumentError(
          "--decoder-kv-memory takes MiB in [0, 16777216], with --device cuda");
    }
    o.decoder_kv_memory_mb = a.Str("decoder-kv-memory", "");
  }
  o.kv_cache_dtype = a.Str("kv-cache-dtype", o.device == "cuda" ? "bf16" : "");
  if (!o.kv_cache_dtype.empty()) {
    RETURN_IF_ERROR(ParseKvDType(o.kv_cache_dtype).status());
  }
  o.decoders = static_cast<int>(decoders);
  o.attention = static_cast<int>(attention);
  o.port = static_cast<int>(port);
  o.grpc_port = static_cast<int>(grpc_port);
  o.ready_timeout_s = static_cast<int>(ready_timeout);
  o.restart = !a.Has("no-restart");
  if (o.port != 0 && o.port == o.grpc_port) {
    return absl::InvalidArgumentError("--port and --grpc-port must differ");
  }
  o.host = a.Str("host", "127.0.0.1");
  if (o.host.empty()) return absl::InvalidArgumentError("--host must not be empty");
  ASSIGN_OR_RETURN(o.api_key,
                   ResolveSecret("API key", a.Str("api-key"), a.Str("api-key-file"), "KVASIR_API_KEY"));
  ASSIGN_OR_RETURN(o.cluster_secret, ResolveSecret("cluster secret", "", a.Str("cluster-secret-file"),
                                                   "KVASIR_CLUSTER_SECRET"));
  if (o.cluster_secret.empty()) {
    ASSIGN_OR_RETURN(o.cluster_secret, RandomSecret());
  }

  const std::string format = a.Str("load-format", "auto");
  if (format != "auto" && format != "dummy") {
    return absl::InvalidArgumentError("--load-format must be auto or dummy");
  }
  if (format == "dummy" && a.Str("dummy-config").empty() && a.Str("model").empty()) {
    return absl::InvalidArgumentError(
        "--load-format dummy needs --dummy-config NAME or --model DIR");
  }
  if (const std::string model = a.Str("model"); !model.empty()) {
    std::error_code ec;
    if (!std::filesystem::is_directory(model, ec)) {
      return absl::InvalidArgumentError("--model " + model + " is not a directory");
    }
  }
  o.log_level = a.Str("log-level");
  static constexpr const char* kLevels[] = {"trace", "debug",    "info", "warn",
                                            "error", "critical", "off"};
  if (a.Has("log-level") &&
      std::find(std::begin(kLevels), std::end(kLevels), o.log_level) == std::end(kLevels)) {
    return absl::InvalidArgumentError(
        "--log-level must be one of trace, debug, info, warn, "
        "error, critical, off");
  }
  for (const char* flag : {"model", "load-format", "dummy-config", "threads", "log-level"}) {
    if (a.Has(flag) && !a.Str(flag).empty()) {
      o.model_flags.push_back(absl::StrCat("--", flag));
      o.model_flags.push_back(a.Str(flag));
    }
  }
  return o;
}

std::string JoinHostPort(const std::string& host, int port) {
  const bool v6 = host.find(':') != std::string::npos && host.front() != '[';
  return absl::StrCat(v6 ? "[" : "", host, v6 ? "]" : "", ":", port);
}

std::string ConnectHost(const std::string& host) {
  if (host.empty() || host == "0.0.0.0") return "127.0.0.1";
  if (host == "::" || host == "[::]") return "::1";
  return host;
}

std::vector<ChildSpec> BuildChildCommands(const ClusterOptions& o, const ClusterPorts& ports) {
  std::vector<ChildSpec> out;
  auto add_model_flags = [&](std::vector<std::string>& argv) {
    argv.insert(argv.end(), o.model_flags.begin(), o.model_flags.end());
  };
  std::vector<std::string> attention_targets, decoder_targets;
  for (int p : ports.attention) attention_targets.push_back(JoinHostPort(kWorkerHost, p));
  for (int p : ports.decoders) decoder_targets.push_back(JoinHostPort(kWorkerHost, p));

  for (size_t i = 0; i < ports.attention.size(); ++i) {
    ChildSpec c{absl::StrCat("attention-", i),
                ClusterRole::kAttention,
                {o.exe, "attention", "--host", kWorkerHost, "--grpc-port",
                 std::to_string(ports.attention[i])},
                attention_targets[i],
                {}};
    add_model_flags(c.argv);
    if (o.kv_blocks > 0) c.argv.insert(c.argv.end(), {"--kv-blocks", std::to_string(o.kv_blocks)});
    if (!o.kv_cache_dtype.empty()) {
      c.argv.insert(c.argv.end(), {"--kv-cache-dtype", o.kv_cache_dtype});
    }
    out.push_back(std::move(c));
  }

  const std::string router_host = ConnectHost(o.host);
  ChildSpec router{
      "router",
      ClusterRole::kRouter,
      {o.exe, "router", "--host", o.host, "--port", std::to_string(ports.router_http),
       "--grpc-port", std::to_string(ports.router_grpc), "--decoders",
       absl::StrJoin(decoder_targets, ","), "--attention", absl::StrJoin(attention_targets, ",")},
      JoinHostPort(router_host, ports.router_grpc),
      {}};
  add_model_flags(router.argv);
  // An empty value overrides a KVASIR_API_KEY the launcher itself was given (and resolved).
  router.env.push_back("KVASIR_API_KEY=" + o.api_key);
  out.push_back(std::move(router));

  for (size_t i = 0; i < ports.decoders.size(); ++i) {
    ChildSpec c{absl::StrCat("decoder-", i),
                ClusterRole::kDecoder,
                {o.exe, "decoder", "--host", kWorkerHost, "--grpc-port",
                 std::to_string(ports.decoders[i]), "--router",
                 JoinHostPort(router_host, ports.router_grpc), "--decoder-id", std::to_string(i)},
                decoder_targets[i],
                {}};
    add_model_flags(c.argv);
    if (o.max_num_seqs > 0) {
      c.argv.insert(c.argv.end(), {"--max-num-seqs", std::to_string(o.max_num_seqs)});
    }
    if (o.max_num_batched_tokens > 0) {
      c.argv.insert(c.argv.end(),
                    {"--max-num-batched-tokens", std::to_string(o.max_num_batched_tokens)});
    }
    if (o.device != "cpu") c.argv.insert(c.argv.end(), {"--device", o.device});
    if (!o.decoder_kv_memory_mb.empty()) {
      c.argv.insert(c.argv.end(), {"--decoder-kv-memory", o.decoder_kv_memory_mb});
    }
    out.push_back(std::move(c));
  }
  for (ChildSpec& c : out) c.env.push_back("KVASIR_CLUSTER_SECRET=" + o.cluster_secret);
  return out;
}

int RunCluster(int argc, char** argv) {
  auto a = cli::Args::Parse(argc, argv, 2, ClusterFlagSpecs());
  if (!a.ok()) return Fail(a.status());
  if (a->Has("help")) {
    std::fputs(cli::Usage("cluster", ClusterFlagSpecs()).c_str(), stdout);
    return 0;
  }
  auto o = ClusterOptionsFromArgs(*a);
  if (!o.ok()) return Fail(o.status());
  return RunCluster(*o);
}

int RunCluster(const ClusterOptions& options) {
  // Blocked before any thread starts (gRPC's inherit the mask), so these signals are only ever
  // taken from the signalfd.
  sigset_t set, old;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGCHLD);
  pthread_sigmask(SIG_BLOCK, &set, &old);
  int sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) return Fail(absl::InternalError(absl::StrCat("signalfd: ", std::strerror(errno))));
  // A health probe writing to a closed socket must not kill the launcher; children get the
  // default action back before exec.
  signal(SIGPIPE, SIG_IGN);
  InitLogging(options.log_level.empty() ? "info" : options.log_level);
  int rc = Launcher(options, old, sfd).Run();
  close(sfd);
  return rc;
}

}  // namespace kvasir

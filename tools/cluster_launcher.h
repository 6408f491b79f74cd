// `kvasir cluster`: a whole Kvasir cluster on one host, as child processes of one launcher.
//
// The launcher picks free loopback ports for the internal gRPC servers, starts the roles from
// the same binary in dependency order (attention workers, then the router, then the decoders,
// which call the router), waits for each stage to be ready (grpc.health.v1 Check of every
// worker, the router's gRPC server answering, finally the router's HTTP GET /health == 200),
// prints one "kvasir cluster ready: ..." line on stdout and stays in the foreground. The
// children share the launcher's stderr (their stdout goes there too) and process group.
// SIGINT/SIGTERM stop the children in reverse order (decoders, router, attention: SIGTERM, 10 s,
// SIGKILL) and exit 0. A child that exits on its own during the start stops the others and
// exits 1; once the cluster is ready it is restarted with backoff while the others keep serving
// (--no-restart: stop all, exit 1). Bad flags exit 2. One thread: signals arrive through a signalfd, children are reaped with waitpid.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "tools/cli_args.h"

namespace kvasir {

struct ClusterOptions {
  int decoders = 1;
  int attention = 1;
  std::string host = "127.0.0.1";  // router HTTP and gRPC listen address
  int port = 8000;                 // router HTTP; 0: a free one
  int grpc_port = 0;               // router gRPC; 0: a free one
  int64_t kv_blocks = -1;          // attention workers' KV pool; -1: their default
  int64_t max_num_seqs = -1;       // decoders' batch limits; -1: their default
  int64_t max_num_batched_tokens = -1;
  // The decoders' device: cpu, or cuda (dense layers on the GPU, attention on the host
  // attention workers). Attention workers and the router stay on the CPU.
  std::string device = "cpu";
  // cuda: MiB of each decoder's GPU for its own KV (the hybrid executor); -1: none.
  std::string decoder_kv_memory_mb;  // empty: none
  // The attention workers' KV storage, fp32 or bf16; empty: theirs (fp32). bf16 by default
  // with cuda decoders, matching the rounding of the GPU's own KV pool.
  std::string kv_cache_dtype;
  std::string api_key;  // router only; empty: none. Passed in its environment, not argv.
  // Shared by every child (in their environment) to authenticate the internal gRPC calls:
  // --cluster-secret-file or $KVASIR_CLUSTER_SECRET, else a fresh random one per launch.
  std::string cluster_secret;
  // Flags every child gets, in order (`--model DIR`, `--load-format ...`, `--dummy-config`,
  // `--threads`, `--log-level`), only those given to the launcher.
  std::vector<std::string> model_flags;
  std::string log_level;               // the launcher's own (and, when given, the children's)
  int ready_timeout_s = 120;           // the whole start, all stages
  // Once the cluster is ready, a child that exits is started again (same flags and ports)
  // after a backoff of 1 s, doubling up to 30 s, back to 1 s once it has run for a minute; the
  // others keep serving meanwhile. false: a child's exit stops the cluster (exit 1).
  bool restart = true;
  std::string exe = "/proc/self/exe";  // the binary the children run
};

// Where the children listen.
struct ClusterPorts {
  std::vector<int> attention;  // gRPC, one per attention worker, on 127.0.0.1
  std::vector<int> decoders;   // gRPC, one per decoder, on 127.0.0.1
  int router_http = 0;         // on options.host
  int router_grpc = 0;         // on options.host
};

enum class ClusterRole { kAttention, kRouter, kDecoder };

struct ChildSpec {
  std::string name;  // "attention-0", "router", "decoder-1"
  ClusterRole role;
  std::vector<std::string> argv;  // argv[0] is options.exe
  std::string grpc_target;        // "127.0.0.1:7001": where its gRPC health service answers
  // NAME=VALUE entries added to (or replacing those of) the launcher's environment: the
  // secrets, which must not show in `ps`.
  std::vector<std::string> env;
};

// The flags of `kvasir cluster`.
const std::vector<cli::FlagSpec>& ClusterFlagSpecs();

// Validated options from parsed flags; InvalidArgument names the bad flag.
absl::StatusOr<ClusterOptions> ClusterOptionsFromArgs(const cli::Args& args);

// The children in start order: attention workers, router, decoders.
std::vector<ChildSpec> BuildChildCommands(const ClusterOptions& options, const ClusterPorts& ports);

// "host:port", with IPv6 literals in brackets.
std::string JoinHostPort(const std::string& host, int port);

// The address a local client uses to reach a server listening on `host`: the loopback address
// for the wildcard addresses (0.0.0.0, ::, empty), `host` itself otherwise.
std::string ConnectHost(const std::string& host);

// `kvasir cluster ...`: argv[1] is "cluster". Returns the process exit code.
int RunCluster(int argc, char** argv);

// Runs the cluster described by validated options (RunCluster's body; tests call it with a
// stand-in `exe`). Blocks SIGINT, SIGTERM and SIGCHLD in the calling thread first: call it
// before any other thread starts.
int RunCluster(const ClusterOptions& options);

}  // namespace kvasir

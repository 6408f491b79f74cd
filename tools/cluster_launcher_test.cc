// `kvasir cluster`: flag validation and the children's command lines (pure), then the launcher
// itself with a stand-in for the role subcommands: a script that runs `kvasir serve` (which has
// gRPC health and HTTP /health) on each role's ports. Start, readiness, SIGTERM, a child's
// death and a child that never becomes ready.
#include "tools/cluster_launcher.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/testing_util.h"

namespace kvasir {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

absl::StatusOr<ClusterOptions> Parse(std::vector<std::string> args) {
  args.insert(args.begin(), {"kvasir", "cluster"});
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  auto parsed = cli::Args::Parse(static_cast<int>(argv.size()), argv.data(), 2, ClusterFlagSpecs());
  if (!parsed.ok()) return parsed.status();
  return ClusterOptionsFromArgs(*parsed);
}

TEST(ClusterOptions, ChildCommandsInStartOrder) {
  auto o =
      Parse({"--decoders",  "2",    "--attention",    "2",  "--model",   ".", "--threads", "1",
             "--log-level", "warn", "--kv-blocks",    "64", "--api-key", "k", "--port",    "8100",
             "--grpc-port", "8101", "--max-num-seqs", "8"});
  ASSERT_TRUE(o.ok()) << o.status();
  ClusterPorts ports{{7001, 7002}, {7101, 7102}, 8100, 8101};
  std::vector<ChildSpec> c = BuildChildCommands(*o, ports);
  ASSERT_EQ(c.size(), 5u);
  const std::string exe = "/proc/self/exe";
  EXPECT_EQ(c[0].name, "attention-0");
  EXPECT_EQ(c[0].role, ClusterRole::kAttention);
  EXPECT_EQ(c[0].grpc_target, "127.0.0.1:7001");
  EXPECT_THAT(c[0].argv,
              ElementsAre(exe, "attention", "--host", "127.0.0.1", "--grpc-port", "7001", "--model",
                          ".", "--threads", "1", "--log-level", "warn", "--kv-blocks", "64"));
  EXPECT_EQ(c[1].name, "attention-1");
  EXPECT_EQ(c[1].grpc_target, "127.0.0.1:7002");
  EXPECT_EQ(c[2].name, "router");
  EXPECT_EQ(c[2].role, ClusterRole::kRouter);
  EXPECT_EQ(c[2].grpc_target, "127.0.0.1:8101");
  EXPECT_THAT(c[2].argv,
              ElementsAre(exe, "router", "--host", "127.0.0.1", "--port", "8100", "--grpc-port",
                          "8101", "--decoders", "127.0.0.1:7101,127.0.0.1:7102", "--attention",
                          "127.0.0.1:7001,127.0.0.1:7002", "--model", ".", "--threads", "1",
                          "--log-level", "warn"));
  // Secrets travel in the environment, never in argv (`ps` shows argv to every user).
  EXPECT_THAT(c[2].env, ::testing::Contains("KVASIR_API_KEY=k"));
  ASSERT_EQ(o->cluster_secret.size(), 64u);  // drawn at random: none was given
  for (const ChildSpec& child : c) {
    EXPECT_THAT(child.env, ::testing::Contains("KVASIR_CLUSTER_SECRET=" + o->cluster_secret))
        << child.name;
    EXPECT_THAT(child.argv, ::testing::Not(::testing::Contains(o->cluster_secret)));
    EXPECT_THAT(child.argv, ::testing::Not(::testing::Contains("k")));
  }
  EXPECT_EQ(c[3].name, "decoder-0");
  EXPECT_EQ(c[3].role, ClusterRole::kDecoder);
  EXPECT_THAT(c[3].argv,
              ElementsAre(exe, "decoder", "--host", "127.0.0.1", "--grpc-port", "7101", "--router",
                          "127.0.0.1:8101", "--decoder-id", "0", "--model", ".", "--threads", "1",
                          "--log-level", "warn", "--max-num-seqs", "8"));
  EXPECT_EQ(c[4].name, "decoder-1");
  EXPECT_EQ(c[4].grpc_target, "127.0.0.1:7102");
  EXPECT_THAT(c[4].argv, ::testing::Contains("1"));
}

TEST(ClusterOptions, SecretsComeFromFilesOrTheEnvironment) {
  const std::string dir = ::testing::TempDir();
  { std::ofstream(dir + "/kvasir_launcher_key") << "file-key\n"; }
  { std::ofstream(dir + "/kvasir_launcher_secret") << "file-secret\n"; }
  auto o = Parse({"--decoders", "1", "--attention", "1", "--api-key-file",
                  dir + "/kvasir_launcher_key", "--cluster-secret-file",
                  dir + "/kvasir_launcher_secret"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->api_key, "file-key");
  EXPECT_EQ(o->cluster_secret, "file-secret");
  setenv("KVASIR_CLUSTER_SECRET", "env-secret", 1);
  setenv("KVASIR_API_KEY", "env-key", 1);
  o = Parse({"--decoders", "1", "--attention", "1"});
  unsetenv("KVASIR_CLUSTER_SECRET");
  unsetenv("KVASIR_API_KEY");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->api_key, "env-key");
  EXPECT_EQ(o->cluster_secret, "env-secret");
  auto missing = Parse({"--decoders", "1", "--attention", "1", "--api-key-file", dir + "/none"});
  EXPECT_FALSE(missing.ok());
}

TEST(ClusterOptions, OnlyGivenFlagsArePassedOn) {
  auto o = Parse({"--decoders", "1", "--attention", "1"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->port, 8000);
  EXPECT_EQ(o->grpc_port, 0);
  EXPECT_EQ(o->ready_timeout_s, 120);
  std::vector<ChildSpec> c = BuildChildCommands(*o, {{5000}, {5001}, 8000, 5002});
  ASSERT_EQ(c.size(), 3u);
  EXPECT_THAT(c[0].argv, ElementsAre("/proc/self/exe", "attention", "--host", "127.0.0.1",
                                     "--grpc-port", "5000"));
  EXPECT_THAT(c[1].argv, ElementsAre("/proc/self/exe", "router", "--host", "127.0.0.1", "--port",
                                     "8000", "--grpc-port", "5002", "--decoders", "127.0.0.1:5001",
                                     "--attention", "127.0.0.1:5000"));
  EXPECT_THAT(c[2].argv,
              ElementsAre("/proc/self/exe", "decoder", "--host", "127.0.0.1", "--grpc-port", "5001",
                          "--router", "127.0.0.1:5002", "--decoder-id", "0"));
}

TEST(ClusterOptions, DeviceGoesToTheDecodersOnly) {
  auto o = Parse({"--decoders", "1", "--attention", "1", "--device", "cuda"});
  ASSERT_TRUE(o.ok()) << o.status();
  std::vector<ChildSpec> c = BuildChildCommands(*o, {{5000}, {5001}, 8000, 5002});
  ASSERT_EQ(c.size(), 3u);
  EXPECT_THAT(c[0].argv, ::testing::Not(::testing::Contains("--device")));
  EXPECT_THAT(c[1].argv, ::testing::Not(::testing::Contains("--device")));
  // The workers store KV in bf16 like the GPU pool, so host and GPU attention round alike.
  EXPECT_THAT(c[0].argv, ElementsAre("/proc/self/exe", "attention", "--host", "127.0.0.1",
                                     "--grpc-port", "5000", "--kv-cache-dtype", "bf16"));
  auto f = Parse({"--decoders", "1", "--attention", "1", "--device", "cuda", "--kv-cache-dtype",
                  "fp32"});
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_THAT(BuildChildCommands(*f, {{5000}, {5001}, 8000, 5002})[0].argv,
              ::testing::IsSupersetOf({"--kv-cache-dtype", "fp32"}));
  EXPECT_THAT(c[2].argv,
              ElementsAre("/proc/self/exe", "decoder", "--host", "127.0.0.1", "--grpc-port", "5001",
                          "--router", "127.0.0.1:5002", "--decoder-id", "0", "--device", "cuda"));
  // The hybrid executor's GPU share goes to the decoders as given.
  auto h = Parse({"--decoders", "1", "--attention", "1", "--device", "cuda", "--decoder-kv-memory",
                  "0.5"});
  ASSERT_TRUE(h.ok()) << h.status();
  std::vector<ChildSpec> hc = BuildChildCommands(*h, {{5000}, {5001}, 8000, 5002});
  EXPECT_THAT(hc[2].argv, ::testing::IsSupersetOf({"--decoder-kv-memory", "0.5"}));
  EXPECT_THAT(hc[0].argv, ::testing::Not(::testing::Contains("--decoder-kv-memory")));
}

TEST(ClusterOptions, WildcardHostIsReachedOverLoopback) {
  EXPECT_EQ(ConnectHost("0.0.0.0"), "127.0.0.1");
  EXPECT_EQ(ConnectHost("::"), "::1");
  EXPECT_EQ(ConnectHost("10.1.2.3"), "10.1.2.3");
  EXPECT_EQ(JoinHostPort("::1", 80), "[::1]:80");
  EXPECT_EQ(JoinHostPort("[::1]", 80), "[::1]:80");
  EXPECT_EQ(JoinHostPort("localhost", 80), "localhost:80");

  auto o = Parse({"--decoders", "1", "--attention", "1", "--host", "0.0.0.0"});
  ASSERT_TRUE(o.ok()) << o.status();
  std::vector<ChildSpec> c = BuildChildCommands(*o, {{5000}, {5001}, 8000, 5002});
  EXPECT_THAT(c[1].argv, ::testing::IsSupersetOf({"0.0.0.0"}));   // the router listens on it,
  EXPECT_EQ(c[1].grpc_target, "127.0.0.1:5002");                  // is probed over loopback,
  EXPECT_THAT(c[2].argv, ::testing::Contains("127.0.0.1:5002"));  // and reached by decoders so
}

TEST(ClusterOptions, BadFlagsAreInvalidArgumentsNamingTheFlag) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--attention", "1"}, "--decoders N is required"},
      {{"--decoders", "1"}, "--attention N is required"},
      {{"--decoders", "0", "--attention", "1"}, "--decoders must be in [1, 64]"},
      {{"--decoders", "1", "--attention", "65"}, "--attention must be in [1, 64]"},
      {{"--decoders", "x", "--attention", "1"}, "not an integer"},
      {{"--decoders", "1", "--attention", "1", "--port", "70000"}, "--port must be in [0, 65535]"},
      {{"--decoders", "1", "--attention", "1", "--grpc-port", "-1"}, "--grpc-port must be in"},
      {{"--decoders", "1", "--attention", "1", "--port", "9000", "--grpc-port", "9000"},
       "must differ"},
      {{"--decoders", "1", "--attention", "1", "--kv-blocks", "0"}, "--kv-blocks must be in"},
      {{"--decoders", "1", "--attention", "1", "--threads", "0"}, "--threads must be in"},
      {{"--decoders", "1", "--attention", "1", "--ready-timeout", "0"}, "--ready-timeout"},
      {{"--decoders", "1", "--attention", "1", "--load-format", "gguf"}, "--load-format"},
      {{"--decoders", "1", "--attention", "1", "--load-format", "dummy"}, "--dummy-config"},
      {{"--decoders", "1", "--attention", "1", "--log-level", "loud"}, "--log-level"},
      {{"--decoders", "1", "--attention", "1", "--model", "/nonexistent/model"},
       "is not a directory"},
      {{"--decoders", "1", "--attention", "1", "--host", ""}, "--host"},
      {{"--decoders", "1", "--attention", "1", "--bogus", "1"}, "unknown flag --bogus"},
      {{"--decoders", "1", "--attention", "1", "--device", "tpu"}, "--device must be cpu or cuda"},
      {{"--decoders", "1", "--attention", "1", "--kv-cache-dtype", "fp8"}, "unknown KV cache dtype"},
      {{"--decoders", "1", "--attention", "1", "--decoder-kv-memory", "64"}, "with --device cuda"},
      {{"--decoders", "1", "--attention", "1", "--device", "cuda", "--decoder-kv-memory", "-1"},
       "--decoder-kv-memory takes MiB"},
  };
  for (const auto& [args, needle] : cases) {
    auto o = Parse(args);
    ASSERT_FALSE(o.ok()) << needle;
    EXPECT_EQ(o.status().code(), absl::StatusCode::kInvalidArgument) << o.status();
    EXPECT_THAT(std::string(o.status().message()), HasSubstr(needle));
  }
}

TEST(ClusterOptions, BadFlagsExitWithCode2) {
  std::vector<std::string> args = {"kvasir", "cluster", "--decoders", "0", "--attention", "1"};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  EXPECT_EQ(RunCluster(static_cast<int>(argv.size()), argv.data()), 2);
}

// ---------------------------------------------------------------------------------------------
// The launcher with stand-in roles.

// Runs `kvasir serve` in place of a role, on the role's ports, after writing its pid to
// $FAKE_DIR/<role>-<grpc port>.pid. $FAKE_HANG=<role> makes that role never answer.
constexpr char kFakeRole[] = R"(#!/bin/bash
set -u
role=$1
shift
host=127.0.0.1 port=0 grpc=0 model=()
while (($#)); do
  case $1 in
    --host) host=$2 ;;
    --port) port=$2 ;;
    --grpc-port) grpc=$2 ;;
    --model | --threads | --log-level | --load-format | --dummy-config) model+=("$1" "$2") ;;
    --decoders | --attention | --router | --decoder-id | --kv-blocks | --api-key) ;;
    *) echo "fake role: unexpected argument $1" >&2; exit 64 ;;
  esac
  shift 2
done
echo $$ >"$FAKE_DIR/$role-$grpc.pid"
[[ ${FAKE_HANG:-} == "$role" ]] && exec sleep 600
exec "$FAKE_KVASIR" serve --host "$host" --port "$port" --grpc-port "$grpc" "${model[@]}"
)";

std::string ReadFile(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool Alive(pid_t pid) { return kill(pid, 0) == 0; }

class ClusterLauncherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    model_ = kvasir::testing::Stories260KDir();
    ASSERT_FALSE(model_.empty()) << "stories260K not found";
    const char* bin = std::getenv("KVASIR_BIN_DIR");
    kvasir_ = fs::absolute(fs::path(bin && *bin ? bin : "build/bin") / "kvasir");
    ASSERT_TRUE(fs::exists(kvasir_)) << kvasir_;
    script_ = fs::path(dir_.path()) / "fake_role.sh";
    std::ofstream(script_) << kFakeRole;
    fs::permissions(script_, fs::perms::owner_all);
  }

  void TearDown() override {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }

  ClusterOptions Options(int decoders, int attention) const {
    ClusterOptions o;
    o.decoders = decoders;
    o.attention = attention;
    o.port = 0;
    o.grpc_port = 0;
    o.model_flags = {"--model", model_, "--threads", "1", "--log-level", "warn"};
    o.ready_timeout_s = 60;
    o.exe = script_.string();
    return o;
  }

  void Start(int decoders, int attention, const std::map<std::string, std::string>& env = {},
             int ready_timeout_s = 60) {
    ClusterOptions o = Options(decoders, attention);
    o.ready_timeout_s = ready_timeout_s;
    Start(o, env);
  }

  // Starts the launcher in a child process (stdout, stderr to files).
  void Start(const ClusterOptions& o, const std::map<std::string, std::string>& env = {}) {
    std::fflush(nullptr);
    pid_ = fork();
    if (pid_ == 0) {
      setenv("FAKE_DIR", dir_.path().c_str(), 1);
      setenv("FAKE_KVASIR", kvasir_.c_str(), 1);
      for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
      if (!freopen(Out().c_str(), "w", stdout) || !freopen(Err().c_str(), "w", stderr)) _exit(99);
      int rc = RunCluster(o);
      std::fflush(nullptr);
      _exit(rc);
    }
  }

  // Polls until the launcher printed its ready line (true) or exited (false).
  bool WaitReady() {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (std::chrono::steady_clock::now() < deadline) {
      if (ReadFile(Out()).find("kvasir cluster ready: ") != std::string::npos) return true;
      if (Exited()) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  // Waits (bounded) for the launcher to exit; returns its wait status, -1 on timeout.
  int WaitExit(int seconds = 60) {
    if (exited_) return status_;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    while (std::chrono::steady_clock::now() < deadline) {
      if (Exited()) return status_;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return -1;
  }

  bool Exited() {
    if (exited_) return true;
    if (waitpid(pid_, &status_, WNOHANG) == pid_) {
      exited_ = true;
      pid_ = -1;
    }
    return exited_;
  }

  // Pids of the stand-in roles, by "<role>-<port>".
  std::map<std::string, pid_t> RolePids() {
    std::map<std::string, pid_t> pids;
    for (const auto& e : fs::directory_iterator(dir_.path())) {
      if (e.path().extension() == ".pid") {
        pids[e.path().stem().string()] = std::atoi(ReadFile(e.path()).c_str());
      }
    }
    return pids;
  }

  std::string Out() const { return (fs::path(dir_.path()) / "stdout").string(); }
  std::string Err() const { return (fs::path(dir_.path()) / "stderr").string(); }

  kvasir::testing::TempDir dir_;
  std::string model_;
  fs::path kvasir_, script_;
  pid_t pid_ = -1;
  bool exited_ = false;
  int status_ = 0;
};

TEST_F(ClusterLauncherTest, StartsInOrderAndStopsOnSigterm) {
  Start(/*decoders=*/2, /*attention=*/2);
  ASSERT_TRUE(WaitReady()) << ReadFile(Err());
  const std::string out = ReadFile(Out());
  // Only the ready line: the children's stdout (serve prints its ports) goes to stderr.
  EXPECT_THAT(out, ::testing::MatchesRegex(
                       "kvasir cluster ready: http://127\\.0\\.0\\.1:[0-9]+ \\(router gRPC "
                       "127\\.0\\.0\\.1:[0-9]+\\), 2 decoders, 2 attention workers\n"));
  std::map<std::string, pid_t> pids = RolePids();
  ASSERT_EQ(pids.size(), 5u);
  int attention = 0, router = 0, decoder = 0;
  for (const auto& [name, pid] : pids) {
    EXPECT_TRUE(Alive(pid)) << name;
    attention += name.rfind("attention-", 0) == 0;
    router += name.rfind("router-", 0) == 0;
    decoder += name.rfind("decoder-", 0) == 0;
  }
  EXPECT_EQ(attention, 2);
  EXPECT_EQ(router, 1);
  EXPECT_EQ(decoder, 2);

  kill(pid_, SIGTERM);
  int status = WaitExit();
  ASSERT_TRUE(WIFEXITED(status)) << status << ReadFile(Err());
  EXPECT_EQ(WEXITSTATUS(status), 0) << ReadFile(Err());
  for (const auto& [name, pid] : pids) EXPECT_FALSE(Alive(pid)) << name << " still running";
}

TEST_F(ClusterLauncherTest, ChildDeathStopsTheOthersAndExits1WithNoRestart) {
  ClusterOptions o = Options(/*decoders=*/1, /*attention=*/1);
  o.restart = false;
  Start(o);
  ASSERT_TRUE(WaitReady()) << ReadFile(Err());
  std::map<std::string, pid_t> pids = RolePids();
  ASSERT_EQ(pids.size(), 3u);
  pid_t victim = -1;
  for (const auto& [name, pid] : pids) {
    if (name.rfind("decoder-", 0) == 0) victim = pid;
  }
  ASSERT_GT(victim, 0);
  kill(victim, SIGKILL);
  int status = WaitExit();
  ASSERT_TRUE(WIFEXITED(status)) << status << ReadFile(Err());
  EXPECT_EQ(WEXITSTATUS(status), 1);
  EXPECT_THAT(ReadFile(Err()), HasSubstr("decoder-0 (pid " + std::to_string(victim) +
                                         ") stopped unexpectedly: it was killed by signal 9"));
  for (const auto& [name, pid] : pids) EXPECT_FALSE(Alive(pid)) << name << " still running";
}

// Once ready, the launcher supervises: a child that dies is started again on its ports while
// the others keep running, and the cluster still stops cleanly.
TEST_F(ClusterLauncherTest, ChildDeathIsRestartedWhileTheOthersKeepServing) {
  Start(/*decoders=*/1, /*attention=*/1);
  ASSERT_TRUE(WaitReady()) << ReadFile(Err());
  std::map<std::string, pid_t> pids = RolePids();
  ASSERT_EQ(pids.size(), 3u);
  std::string victim_name;
  for (const auto& [name, pid] : pids) {
    if (name.rfind("decoder-", 0) == 0) victim_name = name;
  }
  ASSERT_FALSE(victim_name.empty());
  const pid_t victim = pids[victim_name];
  kill(victim, SIGKILL);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  pid_t replacement = victim;
  while (std::chrono::steady_clock::now() < deadline) {
    replacement = RolePids()[victim_name];
    if (replacement != victim && replacement > 0 && Alive(replacement) &&
        ReadFile(Err()).find("restarted decoder-0") != std::string::npos) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_NE(replacement, victim) << ReadFile(Err());
  EXPECT_TRUE(Alive(replacement));
  EXPECT_FALSE(Exited()) << "the launcher stopped: " << ReadFile(Err());
  for (const auto& [name, pid] : pids) {
    if (name != victim_name) {
      EXPECT_TRUE(Alive(pid)) << name << " was stopped";
    }
  }
  const std::string err = ReadFile(Err());
  EXPECT_THAT(err, HasSubstr("decoder-0 (pid " + std::to_string(victim) +
                             ") stopped unexpectedly: it was killed by signal 9"));
  EXPECT_THAT(err, HasSubstr("restarting decoder-0 in 1 s"));
  EXPECT_THAT(err, HasSubstr("restarted decoder-0"));
  kill(pid_, SIGTERM);
  int status = WaitExit();
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_FALSE(Alive(replacement));
}

TEST_F(ClusterLauncherTest, TimeoutNamesTheChildThatNeverBecameReady) {
  Start(/*decoders=*/1, /*attention=*/1, {{"FAKE_HANG", "decoder"}}, /*ready_timeout_s=*/10);
  int status = WaitExit();
  ASSERT_TRUE(WIFEXITED(status)) << status << ReadFile(Err());
  EXPECT_EQ(WEXITSTATUS(status), 1);
  const std::string err = ReadFile(Err());
  EXPECT_THAT(err, ::testing::ContainsRegex("decoder-0 \\(gRPC health at 127\\.0\\.0\\.1:[0-9]+\\) "
                                            "not ready after 10 s"));
  EXPECT_THAT(err, ::testing::Not(::testing::ContainsRegex("(attention-0|router)[^\n]*not ready")));
  EXPECT_EQ(ReadFile(Out()).find("kvasir cluster ready"), std::string::npos);
  for (const auto& [name, pid] : RolePids()) EXPECT_FALSE(Alive(pid)) << name << " still running";
}

TEST_F(ClusterLauncherTest, BusyPortIsReportedBeforeAnythingStarts) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(fd, 1), 0);
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const int busy = ntohs(addr.sin_port);
  ClusterOptions o = Options(1, 1);
  o.port = busy;
  Start(o);
  int status = WaitExit();
  close(fd);
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 1);
  EXPECT_THAT(ReadFile(Err()), HasSubstr("--port " + std::to_string(busy) +
                                         ": 127.0.0.1:" + std::to_string(busy) + " is in use"));
  EXPECT_TRUE(RolePids().empty());
}

}  // namespace
}  // namespace kvasir

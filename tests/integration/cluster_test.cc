// Starts a real cluster — 2 attention workers, a router, 2 decoders, each its own `kvasir`
// process on loopback with free ports, readiness by polling health — and checks it end to end
// over OpenAI HTTP and gRPC: outputs equal `kvasir generate` and the embedded server, a sequence
// whose KV spans both attention workers, 64 concurrent streams, cancellation freeing KV,
// errors, and dead workers.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "kvasir/v1/attention.grpc.pb.h"
#include "kvasir/v1/completion.grpc.pb.h"
#include "kvasir/v1/worker.grpc.pb.h"
#include "model/testing_util.h"
#include "nlohmann/json.hpp"
#include "tests/integration/http_testing.h"
#include "tests/integration/process.h"

namespace kvasir {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

// One `kvasir ROLE ...` child; reads the ports it prints on stdout.
class Child {
 public:
  Child(const std::string& role, std::vector<std::string> args, int port_lines) {
    std::vector<std::string> all = {testing::BinaryPath("kvasir"), role, "--model",
                                    testing::Stories260KDir(), "--log-level", "warn"};
    all.insert(all.end(), args.begin(), args.end());
    pid_ = testing::SpawnServer(all, port_lines, &ports_);
    for (int p : ports_) EXPECT_GT(p, 0) << role << " did not print its port";
  }
  ~Child() { Stop(); }
  void Stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGTERM);
    int status = 0;
    waitpid(pid_, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "child did not exit cleanly: " << status;
    pid_ = -1;
  }
  void Kill() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  bool Alive() const { return pid_ > 0 && kill(pid_, 0) == 0; }
  void Freeze() { if (pid_ > 0) kill(pid_, SIGSTOP); }
  void Resume() { if (pid_ > 0) kill(pid_, SIGCONT); }
  int port(size_t i = 0) const { return ports_.at(i); }

 private:
  pid_t pid_ = -1;
  std::vector<int> ports_;
};

bool GrpcServing(int port) {
  auto stub = grpc::health::v1::Health::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 500ms);
  grpc::health::v1::HealthCheckResponse resp;
  return stub->Check(&ctx, {}, &resp).ok() &&
         resp.status() == grpc::health::v1::HealthCheckResponse::SERVING;
}

// The roles authenticate each other with this secret; the children inherit it from the test's
// environment (KVASIR_CLUSTER_SECRET), as `kvasir cluster` hands its children theirs.
constexpr char kClusterSecret[] = "cluster-test-secret";

// A client context carrying the cluster secret, as the roles send it.
void AddSecret(grpc::ClientContext* ctx) {
  ctx->AddMetadata("authorization", std::string("Bearer ") + kClusterSecret);
}

// 5 layers x 4 KV heads of stories260K: 20 blocks per 16 tokens. Attention pools of 200 and 240
// blocks hold 160 and 192 tokens, so a 300-token sequence needs both workers.
class Cluster {
 public:
  // `router_flags` go to the router only (an API key file, say).
  explicit Cluster(int attention_blocks0 = 200, int attention_blocks1 = 240,
                   std::vector<std::string> router_flags = {},
                   std::vector<std::string> decoder_flags = {}) {
    setenv("KVASIR_CLUSTER_SECRET", kClusterSecret, 1);
    for (int b : {attention_blocks0, attention_blocks1}) {
      attention_.push_back(std::make_unique<Child>(
          "attention", std::vector<std::string>{"--grpc-port", "0", "--kv-blocks",
                                                std::to_string(b)},
          1));
    }
    std::vector<int> dports = {FreePort(), FreePort()};
    std::vector<std::string> router_args = {
        "--port", "0", "--grpc-port", "0", "--decoders",
        "127.0.0.1:" + std::to_string(dports[0]) + ",127.0.0.1:" + std::to_string(dports[1]),
        "--attention",
        "127.0.0.1:" + std::to_string(attention_[0]->port()) +
            ",127.0.0.1:" + std::to_string(attention_[1]->port())};
    router_args.insert(router_args.end(), router_flags.begin(), router_flags.end());
    router_ = std::make_unique<Child>("router", router_args, 2);
    for (int i = 0; i < 2; ++i) {
      std::vector<std::string> args = {"--grpc-port", std::to_string(dports[i]), "--router",
                                       "127.0.0.1:" + std::to_string(router_->port(1)),
                                       "--decoder-id", std::to_string(i + 1)};
      args.insert(args.end(), decoder_flags.begin(), decoder_flags.end());
      decoder_args_.push_back(args);
      decoders_.push_back(std::make_unique<Child>("decoder", args, 1));
    }
    // Readiness: every worker's gRPC health, then the router's HTTP /health saying ok (not
    // degraded: the router has seen every decoder and attention worker up).
    auto deadline = std::chrono::steady_clock::now() + 60s;
    auto ready = [&] {
      for (auto* c : {attention_[0].get(), attention_[1].get(), decoders_[0].get(),
                      decoders_[1].get()}) {
        if (!GrpcServing(c->port())) return false;
      }
      auto r = testing::HttpClient(http_port()).Get("/health");
      return r && r->status == 200 && json::parse(r->body, nullptr, false).value("status", "") == "ok";
    };
    while (!ready()) {
      if (std::chrono::steady_clock::now() > deadline) {
        ADD_FAILURE() << "cluster not ready";
        return;
      }
      std::this_thread::sleep_for(50ms);
    }
  }
  ~Cluster() {
    for (auto& a : attention_) a->Resume();
    for (auto& d : decoders_) d->Stop();
    router_->Stop();
    for (auto& a : attention_) a->Stop();
  }
  int http_port() const { return router_->port(0); }
  int grpc_port() const { return router_->port(1); }
  Child& attention(int i) { return *attention_[i]; }
  Child& decoder(int i) { return *decoders_[i]; }
  // Starts decoder i again, same id and port (after it died), and waits for its gRPC health.
  void RestartDecoder(int i) {
    decoders_[i] = std::make_unique<Child>("decoder", decoder_args_[i], 1);
    auto deadline = std::chrono::steady_clock::now() + 30s;
    while (!GrpcServing(decoders_[i]->port()) && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(20ms);
    }
  }
  Child& router() { return *router_; }
  int64_t Segments(int i) const {
    auto stub = v1::AttentionControl::NewStub(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(attention_[i]->port()), grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    AddSecret(&ctx);
    v1::AttentionInfo info;
    if (!stub->Info(&ctx, {}, &info).ok()) return -1;
    return info.num_segments();
  }

 private:
  std::vector<std::unique_ptr<Child>> attention_, decoders_;
  std::vector<std::vector<std::string>> decoder_args_;
  std::unique_ptr<Child> router_;
};

// Polls (bounded) until the router reports no KV block in use and no worker holds a segment.
void ExpectKvFreed(Cluster& c, std::chrono::seconds within) {
  auto deadline = std::chrono::steady_clock::now() + within;
  while ((testing::KvBlocksUsed(c.http_port()) != 0 || c.Segments(0) + c.Segments(1) != 0) &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(testing::KvBlocksUsed(c.http_port()), 0);
  EXPECT_EQ(c.Segments(0) + c.Segments(1), 0);
}

std::string GenerateText(const std::string& prompt, int max_tokens) {
  auto gen = testing::RunProcess({testing::BinaryPath("kvasir"), "generate", "--model",
                                  testing::Stories260KDir(), "--prompt", prompt, "--max-tokens",
                                  std::to_string(max_tokens), "--temperature", "0",
                                  "--ignore-eos"});
  EXPECT_EQ(gen.exit_code, 0) << gen.err;
  return gen.out.substr(0, gen.out.empty() ? 0 : gen.out.size() - 1);  // drops the newline
}

TEST(Cluster, OutputsEqualGenerateAndEmbeddedAndSpanBothAttentionWorkers) {
  Cluster c;
  const std::string body = json({{"prompt", "Once upon a time"}, {"max_tokens", 300},
                                 {"temperature", 0}, {"ignore_eos", true}})
                               .dump();
  // While a 300-token stream runs, both attention workers hold a segment of it.
  std::atomic<bool> both{false};
  std::string streamed;
  {
    std::thread client([&] {
      auto cl = testing::HttpClient(c.http_port());
      json sb = json::parse(body);
      sb["stream"] = true;
      int chunks = 0;
      auto r = cl.Post("/v1/completions", {}, sb.dump(), "application/json");
      ASSERT_TRUE(r);
      for (size_t pos = 0;;) {
        size_t end = r->body.find("\n\n", pos);
        if (end == std::string::npos) break;
        std::string data = r->body.substr(pos + 6, end - pos - 6);
        pos = end + 2;
        if (data == "[DONE]") break;
        streamed += json::parse(data)["choices"][0]["text"].get<std::string>();
        ++chunks;
      }
      EXPECT_GT(chunks, 100);
    });
    auto deadline = std::chrono::steady_clock::now() + 20s;
    while (!both && std::chrono::steady_clock::now() < deadline) {
      both = c.Segments(0) == 1 && c.Segments(1) == 1;
      std::this_thread::sleep_for(2ms);
    }
    client.join();
  }
  EXPECT_TRUE(both.load()) << "the 300-token sequence never held segments on both workers";

  const std::string expected = GenerateText("Once upon a time", 300);
  int st = 0;
  json j = testing::PostJson(c.http_port(), "/v1/completions", body, &st);
  ASSERT_EQ(st, 200) << j.dump();
  EXPECT_EQ(j["choices"][0]["text"], expected);
  EXPECT_EQ(streamed, expected);
  EXPECT_EQ(j["usage"]["completion_tokens"], 300);

  // The embedded server with the same pool split over two in-process shards agrees.
  Child embedded("serve", {"--port", "0", "--kv-blocks", "440", "--attention-shards", "2"}, 1);
  auto deadline = std::chrono::steady_clock::now() + 30s;
  while (std::chrono::steady_clock::now() < deadline) {
    if (auto r = testing::HttpClient(embedded.port()).Get("/health"); r && r->status == 200) break;
    std::this_thread::sleep_for(20ms);
  }
  json e = testing::PostJson(embedded.port(), "/v1/completions", body, &st);
  ASSERT_EQ(st, 200) << e.dump();
  EXPECT_EQ(e["choices"][0]["text"], expected);
  EXPECT_EQ(c.Segments(0) + c.Segments(1), 0);
  EXPECT_EQ(testing::KvBlocksUsed(c.http_port()), 0);
}

TEST(Cluster, SixtyFourConcurrentStreamsCancellationErrorsAndGrpc) {
  Cluster c(2000, 2000);
  // 64 concurrent streams over both decoders, each with exact usage.
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 64; ++i) {
    threads.emplace_back([&, i] {
      bool done;
      const int max_tokens = 5 + i % 20;
      auto ev = testing::StreamSse(
          c.http_port(), "/v1/completions",
          json({{"prompt", "Lily and Tom " + std::to_string(i)}, {"max_tokens", max_tokens},
                {"ignore_eos", true}, {"seed", i}, {"stream", true},
                {"stream_options", {{"include_usage", true}}}})
              .dump(),
          &done);
      if (done && !ev.empty() && ev.back()["usage"]["completion_tokens"] == max_tokens &&
          ev.back()["usage"]["prompt_tokens"].get<int>() > 3) {
        ++ok;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 64);
  auto m = testing::HttpClient(c.http_port()).Get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_NE(m->body.find("kvasir:request_success_total{model_name=\"stories260K\",finished_"
                         "reason=\"length\"} 64"),
            std::string::npos)
      << m->body;

  // A client that goes away while waiting for a non-streaming answer (nothing is written to it
  // until the end): the router notices the closed connection and cancels the request.
  {
    const int fd = testing::RawPost(c.http_port(), "/v1/completions",
                                    R"({"prompt": "Once", "max_tokens": 500, "ignore_eos": true})");
    ASSERT_GE(fd, 0);
    auto until = std::chrono::steady_clock::now() + 5s;
    while (c.Segments(0) + c.Segments(1) == 0 && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(5ms);
    }
    EXPECT_GT(c.Segments(0) + c.Segments(1), 0);
    close(fd);
    until = std::chrono::steady_clock::now() + 20s;
    auto m = testing::HttpClient(c.http_port()).Get("/metrics");
    while (m && m->body.find("finished_reason=\"abort\"} 1") == std::string::npos &&
           std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(20ms);
      m = testing::HttpClient(c.http_port()).Get("/metrics");
    }
    ASSERT_TRUE(m);
    EXPECT_NE(m->body.find("finished_reason=\"abort\"} 1"), std::string::npos) << m->body;
    // The decoder frees its KV segments right after.
    while (c.Segments(0) + c.Segments(1) != 0 && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(10ms);
    }
    EXPECT_EQ(c.Segments(0) + c.Segments(1), 0);
  }

  // A client that goes away mid-stream: its request is cancelled on the decoder and its KV
  // segments are freed on the attention workers.
  {
    const int fd = testing::RawPost(c.http_port(), "/v1/completions",
                                    R"({"prompt": "Once", "max_tokens": 500, "ignore_eos": true, "stream": true})");
    ASSERT_GE(fd, 0);
    std::string got;
    char buf[4096];
    while (std::count(got.begin(), got.end(), '\n') < 12) {
      ssize_t n = read(fd, buf, sizeof(buf));
      if (n <= 0) break;
      got.append(buf, n);
    }
    EXPECT_GT(testing::KvBlocksUsed(c.http_port()), 0);
    EXPECT_EQ(c.Segments(0) + c.Segments(1), 1);
    close(fd);
  }
  ExpectKvFreed(c, 20s);

  // Errors keep their status and OpenAI shape through the router.
  int st = 0;
  json e = testing::PostJson(c.http_port(), "/v1/completions", "{not json", &st);
  EXPECT_EQ(st, 400);
  EXPECT_EQ(e["error"]["type"], "invalid_request_error");
  testing::PostJson(c.http_port(), "/v1/completions", R"({"model": "gpt-9", "prompt": "a"})", &st);
  EXPECT_EQ(st, 404);
  testing::PostJson(c.http_port(), "/v1/completions",
                    R"({"prompt": "a", "max_tokens": 100000000})", &st);
  EXPECT_EQ(st, 400);
  testing::PostJson(c.http_port(), "/v1/completions", R"({"prompt": "a", "temperature": -1})",
                    &st);
  EXPECT_EQ(st, 400);
  testing::PostJson(c.http_port(), "/v1/completions", R"({"prompt": ""})", &st);
  EXPECT_EQ(st, 400);
  testing::PostJson(c.http_port(), "/v1/completions", "{\"prompt\": \"\xff\xfe\"}", &st);
  EXPECT_EQ(st, 400);

  // gRPC: health and a streamed Generate through the router equal the HTTP output.
  EXPECT_TRUE(GrpcServing(c.grpc_port()));
  auto stub = v1::Completion::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(c.grpc_port()), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  v1::GenerateRequest gr;
  gr.set_prompt("Once upon a time");
  gr.mutable_sampling()->set_max_tokens(40);
  gr.mutable_sampling()->set_temperature(0);
  gr.mutable_sampling()->set_ignore_eos(true);
  auto reader = stub->Generate(&ctx, gr);
  v1::GenerateResponse resp;
  std::string text;
  int completion = 0;
  while (reader->Read(&resp)) {
    text += resp.text();
    if (!resp.finish_reason().empty()) completion = resp.usage().completion_tokens();
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(completion, 40);
  EXPECT_EQ(text, GenerateText("Once upon a time", 40));
  for (int i = 0; i < 2; ++i) {
    EXPECT_TRUE(c.decoder(i).Alive());
    EXPECT_TRUE(c.attention(i).Alive());
  }
  EXPECT_TRUE(c.router().Alive());
}

// Issue 11's reproduction: 2 decoders share 2 attention workers of 256 blocks (192 tokens each,
// 384 in all) while 16 requests of 205 tokens arrive at once. Each decoder used to preempt only
// its own sequences, and both ended up holding half the pool, each waiting for the other: a
// deadlock. The router's KV manager makes younger requests, on either decoder, give way to the
// oldest one's growth, so all 16 finish, with the single-process greedy text.
TEST(Cluster, SixteenRequestsUnderMemoryPressureAllFinish) {
  Cluster c(256, 256);
  const std::string want = GenerateText("Once upon a time", 200);
  const std::string body = json({{"prompt", "Once upon a time"}, {"max_tokens", 200},
                                 {"temperature", 0}, {"ignore_eos", true}})
                               .dump();
  std::vector<std::thread> clients;
  std::vector<std::string> texts(16);
  std::vector<int> statuses(16, 0);
  for (int i = 0; i < 16; ++i) {
    clients.emplace_back([&, i] {
      json r = testing::PostJson(c.http_port(), "/v1/completions", body, &statuses[i]);
      if (statuses[i] == 200) texts[i] = r["choices"][0]["text"].get<std::string>();
    });
  }
  for (auto& t : clients) t.join();
  for (int i = 0; i < 16; ++i) {
    EXPECT_EQ(statuses[i], 200) << i;
    EXPECT_EQ(texts[i], want) << i;
  }
  ExpectKvFreed(c, 10s);
}

// Runs `n` concurrent greedy streams of `tokens` tokens and calls `fault` once they are under
// way (KV in use, tokens flowing). Returns each request's status and text.
struct FaultRun {
  std::vector<int> status;
  std::vector<std::string> text, error;
};
// `fault` runs `delay` after the streams first hold KV (keep it well under their run time: a
// fast data plane finishes 150 tokens in a few hundred ms).
FaultRun RunWithFault(Cluster& c, int n, int tokens, const std::function<void()>& fault,
                      std::chrono::milliseconds delay = std::chrono::milliseconds(300)) {
  FaultRun r{std::vector<int>(n, 0), std::vector<std::string>(n), std::vector<std::string>(n)};
  const std::string body = json({{"prompt", "Once upon a time"}, {"max_tokens", tokens},
                                 {"temperature", 0}, {"ignore_eos", true}})
                               .dump();
  std::vector<std::thread> clients;
  for (int i = 0; i < n; ++i) {
    clients.emplace_back([&, i] {
      json j = testing::PostJson(c.http_port(), "/v1/completions", body, &r.status[i]);
      if (r.status[i] == 200) {
        r.text[i] = j["choices"][0]["text"].get<std::string>();
      } else if (j.contains("error")) {
        r.error[i] = j["error"]["message"].get<std::string>();
      }
    });
  }
  auto deadline = std::chrono::steady_clock::now() + 20s;
  while (testing::KvBlocksUsed(c.http_port()) <= 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  std::this_thread::sleep_for(delay);
  fault();
  for (auto& t : clients) t.join();
  return r;
}

// An attention worker killed mid-stream: the sequences it held are recomputed on the other
// worker from their tokens, and every request completes with the single-process greedy text.
TEST(Cluster, KilledAttentionWorkerMidStreamIsRecomputedElsewhere) {
  Cluster c(4000, 4000);  // either worker alone holds all 8 streams
  const std::string want = GenerateText("Once upon a time", 300);
  const auto t0 = std::chrono::steady_clock::now();
  FaultRun r = RunWithFault(c, 8, 300, [&] { c.attention(0).Kill(); }, 20ms);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(r.status[i], 200) << i << ": " << r.error[i];
    EXPECT_EQ(r.text[i], want) << i;
  }
  std::printf("8 streams x 300 tokens, attention worker killed mid-stream: %.1f s\n", secs);
  // It did hold some of them when it died (/metrics of the router's KV manager).
  auto m = testing::HttpClient(c.http_port()).Get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->body.find("kvasir:kv_sequences_lost_total{model_name=\"stories260K\"} 0"),
            std::string::npos) << m->body;
  EXPECT_NE(m->body.find("kvasir:kv_pools_down_total{model_name=\"stories260K\"} 1"),
            std::string::npos) << m->body;
  EXPECT_NE(m->body.find("state=\"free\"} 4000"), std::string::npos) << m->body;
  // Serving on what is left, and saying so.
  auto h = testing::HttpClient(c.http_port()).Get("/health");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
  EXPECT_EQ(json::parse(h->body)["status"], "degraded") << h->body;
  EXPECT_EQ(json::parse(h->body)["detail"], "1 of 2 attention workers down") << h->body;
  EXPECT_TRUE(c.router().Alive() && c.decoder(0).Alive() && c.decoder(1).Alive());
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (testing::KvBlocksUsed(c.http_port()) != 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(testing::KvBlocksUsed(c.http_port()), 0);
  EXPECT_EQ(c.Segments(1), 0);
}

// A frozen (SIGSTOPped) attention worker: the steps waiting on it time out (3 s here), the
// router's health checks mark it down, its sequences are recomputed on the other worker; once
// resumed it rejoins (its stale segments freed) and takes new work.
TEST(Cluster, FrozenAttentionWorkerIsRoutedAroundAndRejoins) {
  Cluster c(2000, 2000, {}, {"--attention-timeout-ms", "3000"});
  const std::string want = GenerateText("Once upon a time", 150);
  FaultRun r = RunWithFault(c, 6, 150, [&] { c.attention(0).Freeze(); });
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(r.status[i], 200) << i << ": " << r.error[i];
    EXPECT_EQ(r.text[i], want) << i;
  }
  c.attention(0).Resume();
  // Rejoined: its stale segments are freed and it holds new sequences again.
  auto deadline = std::chrono::steady_clock::now() + 15s;
  while (c.Segments(0) != 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(c.Segments(0), 0);
  std::this_thread::sleep_for(1500ms);  // a few health checks
  r = RunWithFault(c, 6, 100, [] {});
  for (int i = 0; i < 6; ++i) EXPECT_EQ(r.status[i], 200) << i << ": " << r.error[i];
  EXPECT_EQ(testing::KvBlocksUsed(c.http_port()), 0);
}

// A decoder killed mid-stream: the router resumes each of its streams on the other decoder
// from the tokens already sent (greedy and seeded sampling continue exactly; the client sees
// neither a gap nor a repeat; seeded sampling in the next test), and the dead decoder's KV blocks return to the pools once its
// lease (10 s) expires.
TEST(Cluster, KilledDecoderStreamsMigrateAndItsBlocksAreFreed) {
  Cluster c(2000, 2000);
  const std::string want = GenerateText("Once upon a time", 200);
  const auto t0 = std::chrono::steady_clock::now();
  FaultRun r = RunWithFault(c, 8, 200, [&] { c.decoder(0).Kill(); });
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(r.status[i], 200) << i << ": " << r.error[i];
    EXPECT_EQ(r.text[i], want) << i;
  }
  ExpectKvFreed(c, 25s);
  std::printf("decoder killed under 8 streams: all completed; blocks free after %.1f s\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
}

// A decoder that comes back (same id) announces its restart before it places anything: what
// its previous run held is freed at once, well before that run's 10 s lease would expire.
TEST(Cluster, RestartedDecoderFreesWhatItsPreviousRunHeld) {
  Cluster c(2000, 2000, {"--migration-limit", "0"});
  FaultRun r = RunWithFault(c, 4, 400, [&] { c.decoder(0).Kill(); });
  const auto killed = std::chrono::steady_clock::now();
  int failed = 0;
  for (int i = 0; i < 4; ++i) failed += r.status[i] != 200;
  ASSERT_GT(failed, 0) << "no stream was on the killed decoder";
  c.RestartDecoder(0);
  auto metric = [&](const std::string& name) {
    auto m = testing::HttpClient(c.http_port()).Get("/metrics");
    if (!m) return int64_t{-1};
    const std::string key = "kvasir:" + name + "{model_name=\"stories260K\"} ";
    const size_t at = m->body.find(key);
    return at == std::string::npos ? int64_t{-1}
                                   : int64_t{std::stoll(m->body.substr(at + key.size()))};
  };
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (metric("kv_sequences_reclaimed_total") < failed &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
  EXPECT_GE(metric("kv_sequences_reclaimed_total"), failed);
  EXPECT_LT(secs, 9.0) << "freed by the lease, not by the restart notice";
  ExpectKvFreed(c, 10s);
  // And the restarted decoder serves.
  r = RunWithFault(c, 4, 20, [] {});
  for (int i = 0; i < 4; ++i) EXPECT_EQ(r.status[i], 200) << r.error[i];
}

// A seeded stream migrated midway continues exactly as it would have.
TEST(Cluster, SeededStreamMigratedMidwayContinuesIdentically) {
  Cluster c(2000, 2000);
  const std::string body =
      json({{"prompt", "Lily and Ben"}, {"max_tokens", 250}, {"temperature", 1.0}, {"seed", 3},
            {"ignore_eos", true}})
          .dump();
  int st = 0;
  const std::string want =
      testing::PostJson(c.http_port(), "/v1/completions", body, &st)["choices"][0]["text"];
  ASSERT_EQ(st, 200);
  // Two concurrent copies: least-loaded placement puts them on different decoders; decoder 0
  // dies under its copy, which the router resumes on decoder 1.
  std::vector<std::string> got(2);
  std::vector<int> status(2, 0);
  std::vector<std::thread> ts;
  for (int i = 0; i < 2; ++i) {
    ts.emplace_back([&, i] {
      json j = testing::PostJson(c.http_port(), "/v1/completions", body, &status[i]);
      if (status[i] == 200) got[i] = j["choices"][0]["text"].get<std::string>();
    });
  }
  auto deadline = std::chrono::steady_clock::now() + 20s;
  while (testing::KvBlocksUsed(c.http_port()) <= 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  std::this_thread::sleep_for(150ms);
  c.decoder(0).Kill();
  for (auto& t : ts) t.join();
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(status[i], 200) << i;
    EXPECT_EQ(got[i], want) << i;
  }
}

// Every internal service refuses a caller without the cluster secret; the router's public
// Completion service and HTTP API take the API key instead; health checks stay open.
TEST(Cluster, InternalPortsRequireTheClusterSecretAndTheApiTheKey) {
  const std::string key_file = ::testing::TempDir() + "/kvasir_cluster_test_api_key";
  { std::ofstream(key_file) << "sk-cluster\n"; }
  Cluster c(200, 240, {"--api-key-file", key_file});
  auto channel = [](int port) {
    return grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                               grpc::InsecureChannelCredentials());
  };
  auto expect_auth = [](const char* what, auto&& call) {
    for (const char* header : {"", "Bearer wrong", "Bearer sk-cluster"}) {
      grpc::ClientContext ctx;
      if (*header) ctx.AddMetadata("authorization", header);
      EXPECT_EQ(call(&ctx).error_code(), grpc::StatusCode::UNAUTHENTICATED)
          << what << " with '" << header << "'";
    }
    grpc::ClientContext ctx;
    AddSecret(&ctx);
    grpc::Status st = call(&ctx);
    EXPECT_TRUE(st.ok()) << what << ": " << st.error_message();
  };
  auto attention_control = v1::AttentionControl::NewStub(channel(c.attention(0).port()));
  expect_auth("AttentionControl.Info", [&](grpc::ClientContext* ctx) {
    v1::AttentionInfo info;
    return attention_control->Info(ctx, {}, &info);
  });
  auto attention_data = v1::AttentionData::NewStub(channel(c.attention(1).port()));
  expect_auth("AttentionData.Step", [&](grpc::ClientContext* ctx) {
    v1::AttentionStepRequest req;  // no items: nothing to compute, OK once authenticated
    v1::AttentionStepReply reply;
    return attention_data->Step(ctx, req, &reply);
  });
  auto directory = v1::KvDirectory::NewStub(channel(c.grpc_port()));
  expect_auth("KvDirectory.Info", [&](grpc::ClientContext* ctx) {
    v1::DirectoryInfo info;
    return directory->Info(ctx, {}, &info);
  });
  auto decoder = v1::Decoder::NewStub(channel(c.decoder(0).port()));
  expect_auth("Decoder.Stats", [&](grpc::ClientContext* ctx) {
    v1::DecoderStats stats;
    return decoder->Stats(ctx, {}, &stats);
  });
  for (int port : {c.attention(0).port(), c.decoder(1).port(), c.grpc_port()}) {
    EXPECT_TRUE(GrpcServing(port)) << port;  // health needs no secret
  }

  // The public gRPC API wants the API key, not the cluster secret.
  auto completion = v1::Completion::NewStub(channel(c.grpc_port()));
  auto generate = [&](const std::string& header, std::string* text) {
    grpc::ClientContext ctx;
    if (!header.empty()) ctx.AddMetadata("authorization", header);
    v1::GenerateRequest gr;
    gr.set_prompt("Once upon a time");
    gr.mutable_sampling()->set_max_tokens(5);
    auto reader = completion->Generate(&ctx, gr);
    v1::GenerateResponse resp;
    while (reader->Read(&resp)) *text += resp.text();
    return reader->Finish();
  };
  std::string text;
  EXPECT_EQ(generate("", &text).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(generate(std::string("Bearer ") + kClusterSecret, &text).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(text, "");
  grpc::Status st = generate("Bearer sk-cluster", &text);
  EXPECT_TRUE(st.ok()) << st.error_message();
  EXPECT_FALSE(text.empty());
  int status = 0;
  testing::PostJson(c.http_port(), "/v1/completions", R"({"prompt": "a", "max_tokens": 2})",
                    &status);
  EXPECT_EQ(status, 401);
  testing::PostJson(c.http_port(), "/v1/completions", R"({"prompt": "a", "max_tokens": 2})",
                    &status, {{"Authorization", "Bearer sk-cluster"}});
  EXPECT_EQ(status, 200);
}

// A role started without any cluster secret refuses to run open, and says how to give one.
TEST(Cluster, RolesWithoutASecretRefuseToStart) {
  for (const char* role : {"attention", "router", "decoder"}) {
    std::vector<std::string> argv = {testing::BinaryPath("kvasir"), role, "--model",
                                     testing::Stories260KDir(), "--log-level", "warn"};
    if (std::string(role) == "router") {
      argv.insert(argv.end(), {"--decoders", "127.0.0.1:1", "--attention", "127.0.0.1:1"});
    } else if (std::string(role) == "decoder") {
      argv.insert(argv.end(), {"--router", "127.0.0.1:1"});
    }
    auto r = testing::RunProcess(argv, "", {{"KVASIR_CLUSTER_SECRET", ""}});
    EXPECT_NE(r.exit_code, 0) << role;
    EXPECT_NE(r.err.find("KVASIR_CLUSTER_SECRET"), std::string::npos) << role << ": " << r.err;
  }
}

TEST(Cluster, DeadWorkersGiveClearErrorsAndNothingCrashes) {
  Cluster c;
  // An attention worker dies: a request that needs both workers fails with 503 and a message;
  // the router and the decoders stay up.
  c.attention(1).Kill();
  int st = 0;
  json e = testing::PostJson(c.http_port(), "/v1/completions",
                             R"({"prompt": "Once", "max_tokens": 300, "ignore_eos": true})",
                             &st);
  EXPECT_EQ(st, 503) << e.dump();
  EXPECT_NE(e["error"]["message"].get<std::string>().find("attention worker"), std::string::npos)
      << e.dump();
  EXPECT_TRUE(c.router().Alive());
  EXPECT_TRUE(c.decoder(0).Alive());
  EXPECT_TRUE(c.decoder(1).Alive());

  // Every decoder dies: /health and requests say 503.
  c.decoder(0).Kill();
  c.decoder(1).Kill();
  auto deadline = std::chrono::steady_clock::now() + 10s;
  int health = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    auto r = testing::HttpClient(c.http_port()).Get("/health");
    health = r ? r->status : 0;
    if (health == 503) break;
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(health, 503);
  e = testing::PostJson(c.http_port(), "/v1/completions", R"({"prompt": "Once", "max_tokens": 5})",
                        &st);
  EXPECT_EQ(st, 503) << e.dump();
  EXPECT_TRUE(c.router().Alive());
}

}  // namespace
}  // namespace kvasir

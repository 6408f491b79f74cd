// `--backend kvasir-grpc` against an in-test kvasir.v1.Completion server that streams scripted
// messages at scripted times: the client's TTFT/ITL/latency agree with the server's own send
// timestamps, usage is read from the last message, failures (non-OK status mid-stream,
// unreachable target, deadline) are counted with their reasons, --max-concurrency holds, and
// the CLI runs end to end.
#include "tools/bench/grpc_stream_client.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "kvasir/v1/completion.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "tools/bench/bench_serve.h"
#include "tools/bench/openai_request.h"

namespace kvasir::bench {
namespace {

// What the fake server sends for one stream. Times are seconds after it received the call.
struct Plan {
  std::vector<double> send_at_s;   // one per message
  std::vector<std::string> texts;  // one per message
  bool usage_on_last = true;
  int prompt_tokens = 7;
  int completion_tokens = 0;
  grpc::Status status = grpc::Status::OK;  // returned after the messages
};

// What the fake server saw and did for one stream.
struct Served {
  v1::GenerateRequest request;
  std::multimap<std::string, std::string> metadata;
  double received_at = 0;       // MonotonicSeconds()
  std::vector<double> sent_at;  // per message written
};

class FakeCompletionServer final : public v1::Completion::Service {
 public:
  using Script = std::function<Plan(int index, const v1::GenerateRequest&)>;

  explicit FakeCompletionServer(Script script) : script_(std::move(script)) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(this);
    server_ = builder.BuildAndStart();
  }
  ~FakeCompletionServer() override {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  }

  int port() const { return port_; }
  std::string target() const { return absl::StrCat("127.0.0.1:", port_); }
  int peak_concurrent() const { return peak_; }
  std::vector<Served> served() {
    std::lock_guard<std::mutex> lock(mu_);
    return served_;
  }

  grpc::Status Generate(grpc::ServerContext* ctx, const v1::GenerateRequest* request,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override {
    Served s;
    s.received_at = MonotonicSeconds();
    s.request = *request;
    for (const auto& [k, v] : ctx->client_metadata()) {
      s.metadata.emplace(std::string(k.data(), k.size()), std::string(v.data(), v.size()));
    }
    const int now_running = ++running_;
    for (int peak = peak_; now_running > peak && !peak_.compare_exchange_weak(peak, now_running);) {
    }
    const Plan plan = script_(next_index_++, *request);
    bool cancelled = false;
    for (size_t k = 0; k < plan.texts.size() && !cancelled; ++k) {
      // Small steps, so a cancelled call (deadline, shutdown) ends at once.
      while (MonotonicSeconds() < s.received_at + plan.send_at_s[k]) {
        if (ctx->IsCancelled()) {
          cancelled = true;
          break;
        }
        const double left = s.received_at + plan.send_at_s[k] - MonotonicSeconds();
        std::this_thread::sleep_for(std::chrono::duration<double>(std::min(left, 0.010)));
      }
      if (cancelled) break;
      v1::GenerateResponse r;
      r.set_text(plan.texts[k]);
      if (k + 1 == plan.texts.size() && plan.usage_on_last) {
        r.set_finish_reason("length");
        r.mutable_usage()->set_prompt_tokens(plan.prompt_tokens);
        r.mutable_usage()->set_completion_tokens(plan.completion_tokens);
      }
      s.sent_at.push_back(MonotonicSeconds());
      if (!writer->Write(r)) cancelled = true;
    }
    --running_;  // before the status leaves, so the client's slot frees after this
    {
      std::lock_guard<std::mutex> lock(mu_);
      served_.push_back(std::move(s));
    }
    if (cancelled) return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
    return plan.status;
  }

 private:
  Script script_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::atomic<int> next_index_{0};
  std::atomic<int> running_{0};
  std::atomic<int> peak_{0};
  std::mutex mu_;
  std::vector<Served> served_;
};

std::vector<HttpJob> MakeJobs(int n, const std::vector<double>& arrivals = {},
                              nlohmann::json extra = nlohmann::json::object()) {
  std::vector<HttpJob> jobs(n);
  for (int i = 0; i < n; ++i) {
    RequestParams p;
    p.prompt = absl::StrCat("prompt ", i);
    p.max_tokens = 9;
    p.ignore_eos = true;
    p.extra_body = extra;
    jobs[i].body = BuildRequestBody(ApiKind::kCompletions, p);
    jobs[i].prompt_len = 2;
    jobs[i].request_id = absl::StrCat("req-", i);
    jobs[i].arrival_s = arrivals.empty() ? 0.0 : arrivals[i];
  }
  return jobs;
}

int Index(const Served& s) {
  int i = -1;
  EXPECT_EQ(std::sscanf(s.request.prompt().c_str(), "prompt %d", &i), 1);
  return i;
}

// Four text messages 20 ms apart after a first delay of 40/60/80 ms, then a text-less
// message with usage 10 ms later.
Plan TimingPlan(int i) {
  Plan p;
  const double first = 0.040 + 0.020 * (i % 3);
  p.send_at_s = {first, first + 0.020, first + 0.040, first + 0.060, first + 0.070};
  p.texts = {"a ", "b ", "c ", "d ", ""};
  p.completion_tokens = 9;
  return p;
}

TEST(GrpcStreamClientTest, TimingsMatchServerSendTimes) {
  FakeCompletionServer server([](int, const v1::GenerateRequest& r) {
    int i = 0;
    std::sscanf(r.prompt().c_str(), "prompt %d", &i);
    return TimingPlan(i);
  });
  const int n = 9;
  GrpcClientOptions opt;
  opt.target = server.target();
  int last_progress = 0;
  opt.on_progress = [&](int done, int total) {
    EXPECT_EQ(total, n);
    EXPECT_GT(done, last_progress);
    last_progress = done;
  };
  auto run = RunGrpcStreamingRequests(MakeJobs(n), opt);
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(last_progress, n);
  ASSERT_EQ(run->outputs.size(), static_cast<size_t>(n));

  std::vector<double> delays;  // client read time - server send time: first and last message
  double ttft_sum = 0, itl_sum = 0;
  int itl_count = 0;
  for (const Served& s : server.served()) {
    const int i = Index(s);
    ASSERT_TRUE(i >= 0 && i < n);
    const RequestOutput& o = run->outputs[i];
    ASSERT_TRUE(o.success) << o.error;
    ASSERT_EQ(s.sent_at.size(), 5u);
    const double client_start = run->run_start + o.start_time;
    EXPECT_LE(client_start, s.received_at);
    const double want_ttft = s.sent_at[0] - client_start;
    const double want_latency = s.sent_at[4] - client_start;  // the usage message
    // A message cannot be read before it was sent (one clock for both sides).
    EXPECT_GT(o.ttft - want_ttft, -1e-5);
    EXPECT_GT(o.latency - want_latency, -1e-5);
    EXPECT_LT(o.ttft - want_ttft, 0.025);
    EXPECT_LT(o.latency - want_latency, 0.025);
    delays.push_back(o.ttft - want_ttft);
    ttft_sum += o.ttft;
    delays.push_back(o.latency - want_latency);
    EXPECT_GE(o.ttft, 0.040 + 0.020 * (i % 3));
    // ITL: only the messages with text; the usage-only message is not a token.
    ASSERT_EQ(o.itl.size(), 3u);
    for (int k = 0; k < 3; ++k) {
      EXPECT_NEAR(o.itl[k], s.sent_at[k + 1] - s.sent_at[k], 0.020) << i << " " << k;
      itl_sum += o.itl[k];
      ++itl_count;
    }
    EXPECT_EQ(o.output_tokens, 9);  // usage.completion_tokens
    EXPECT_EQ(o.prompt_len, 7);     // usage.prompt_tokens replaces the dataset's 2
    EXPECT_EQ(o.generated_text, "a b c d ");
    EXPECT_LT(o.queue_time, 0.050);  // only the time to start the earlier streams
  }
  std::sort(delays.begin(), delays.end());
  // Median read delay: a few ms on an idle machine; bounded loosely, since ctest runs other
  // suites beside this one on two cores.
  EXPECT_LT(delays[delays.size() / 2], 0.010);

  auto counter = MakeWordCounter();
  const BenchmarkMetrics m = CalculateMetrics(run->outputs, run->duration_s, *counter, {99}, {});
  EXPECT_EQ(m.completed, n);
  EXPECT_EQ(m.failed, 0);
  EXPECT_EQ(m.total_output, 9 * n);
  EXPECT_EQ(m.total_input, 7 * n);
  EXPECT_FALSE(m.output_tokens_counted);
  // The metrics aggregate exactly what the client measured (each measurement was checked
  // against the server's send times above; not against the planned 20 ms: how late the fake
  // server's sleeps wake up depends on the machine's load, which the client cannot be blamed for).
  EXPECT_NEAR(m.ttft.mean_ms, ttft_sum / n * 1e3, 1e-6);
  EXPECT_NEAR(m.itl.mean_ms, itl_sum / itl_count * 1e3, 1e-6);
  EXPECT_EQ(m.max_concurrent_requests, n);
}

TEST(GrpcStreamClientTest, WithoutUsageTheTextIsCounted) {
  FakeCompletionServer server([](int, const v1::GenerateRequest&) {
    Plan p;
    p.send_at_s = {0.001, 0.002};
    p.texts = {"one two ", "three"};
    p.usage_on_last = false;
    return p;
  });
  GrpcClientOptions opt;
  opt.target = server.target();
  auto run = RunGrpcStreamingRequests(MakeJobs(2), opt);
  ASSERT_TRUE(run.ok()) << run.status();
  for (const RequestOutput& o : run->outputs) {
    ASSERT_TRUE(o.success) << o.error;
    EXPECT_EQ(o.output_tokens, 0);
    EXPECT_EQ(o.prompt_len, 2);  // the dataset's
  }
  auto counter = MakeWordCounter();
  const BenchmarkMetrics m = CalculateMetrics(run->outputs, run->duration_s, *counter, {99}, {});
  EXPECT_EQ(m.total_output, 6);
  EXPECT_TRUE(m.output_tokens_counted);
}

TEST(GrpcStreamClientTest, SendsTheRequestFieldsAndMetadata) {
  FakeCompletionServer server([](int, const v1::GenerateRequest&) {
    Plan p;
    p.send_at_s = {0.0};
    p.texts = {"x"};
    p.completion_tokens = 1;
    return p;
  });
  GrpcClientOptions opt;
  opt.target = server.target();
  opt.metadata = {{"authorization", "Bearer sk-test"}, {"x-tenant", "t1"}};
  auto jobs = MakeJobs(
      1, {}, {{"temperature", 0.5}, {"top_p", 0.9}, {"top_k", 40}, {"min_p", 0.05}, {"seed", 3}});
  auto run = RunGrpcStreamingRequests(jobs, opt);
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_TRUE(run->outputs[0].success) << run->outputs[0].error;
  const auto served = server.served();
  ASSERT_EQ(served.size(), 1u);
  const v1::GenerateRequest& r = served[0].request;
  EXPECT_EQ(r.model(), "");  // the server's model
  EXPECT_EQ(r.prompt(), "prompt 0");
  const v1::SamplingOptions& s = r.sampling();
  EXPECT_EQ(s.max_tokens(), 9);
  EXPECT_TRUE(s.ignore_eos());
  EXPECT_FLOAT_EQ(s.temperature(), 0.5f);
  EXPECT_FLOAT_EQ(s.top_p(), 0.9f);
  EXPECT_EQ(s.top_k(), 40);
  EXPECT_FLOAT_EQ(s.min_p(), 0.05f);
  ASSERT_TRUE(s.has_seed());
  EXPECT_EQ(s.seed(), 3u);
  EXPECT_FALSE(s.has_repetition_penalty());
  const auto& md = served[0].metadata;
  ASSERT_EQ(md.count("authorization"), 1u);
  EXPECT_EQ(md.find("authorization")->second, "Bearer sk-test");
  ASSERT_EQ(md.count("x-tenant"), 1u);
  EXPECT_EQ(md.find("x-tenant")->second, "t1");
  ASSERT_EQ(md.count("x-request-id"), 1u);
  EXPECT_EQ(md.find("x-request-id")->second, "req-0");
}

TEST(GrpcStreamClientTest, TranslatesOpenAiBodies) {
  RequestParams p;
  p.model = "m";
  p.prompt = "hello";
  p.max_tokens = 5;
  p.extra_body = {{"stop", {"a", "b"}}, {"stop_token_ids", {1, 2}}, {"repetition_penalty", 1.1}};
  v1::GenerateRequest r;
  ASSERT_TRUE(GenerateRequestFromBody(BuildRequestBody(ApiKind::kChatCompletions, p), &r).ok());
  EXPECT_EQ(r.model(), "m");
  ASSERT_EQ(r.input_case(), v1::GenerateRequest::kChat);
  ASSERT_EQ(r.chat().messages_size(), 1);
  EXPECT_EQ(r.chat().messages(0).role(), "user");
  EXPECT_EQ(r.chat().messages(0).content(), "hello");
  EXPECT_EQ(r.sampling().max_tokens(), 5);
  EXPECT_FALSE(r.sampling().ignore_eos());
  EXPECT_FALSE(r.sampling().has_temperature());
  ASSERT_EQ(r.sampling().stop_size(), 2);
  EXPECT_EQ(r.sampling().stop(1), "b");
  ASSERT_EQ(r.sampling().stop_token_ids_size(), 2);
  EXPECT_FLOAT_EQ(r.sampling().repetition_penalty(), 1.1f);

  p.extra_body = {{"logprobs", 2}};  // nothing to carry it: an error, not a silent drop
  absl::Status s = GenerateRequestFromBody(BuildRequestBody(ApiKind::kCompletions, p), &r);
  EXPECT_TRUE(absl::IsInvalidArgument(s));
  EXPECT_NE(s.message().find("'logprobs'"), std::string::npos) << s;
  EXPECT_FALSE(GenerateRequestFromBody(R"({"max_tokens": 3})", &r).ok());
  EXPECT_FALSE(GenerateRequestFromBody("not json", &r).ok());
  EXPECT_FALSE(GenerateRequestFromBody(R"({"prompt": "x", "top_k": 1.5})", &r).ok());

  // A bad body fails the whole run before anything is sent.
  std::vector<HttpJob> jobs = MakeJobs(1);
  jobs[0].body = R"({"prompt": "x", "n": 2})";
  GrpcClientOptions opt;
  opt.target = "127.0.0.1:1";
  EXPECT_TRUE(absl::IsInvalidArgument(RunGrpcStreamingRequests(jobs, opt).status()));
}

TEST(GrpcStreamClientTest, TargetFromUrl) {
  bool tls = true;
  EXPECT_EQ(*GrpcTargetFromUrl("http://127.0.0.1:50051", &tls), "127.0.0.1:50051");
  EXPECT_FALSE(tls);
  EXPECT_EQ(*GrpcTargetFromUrl("http://h:1/v1/", &tls), "h:1");
  EXPECT_EQ(*GrpcTargetFromUrl("https://h:443", &tls), "h:443");
  EXPECT_TRUE(tls);
  EXPECT_EQ(*GrpcTargetFromUrl("[::1]:9000", &tls), "[::1]:9000");
  EXPECT_FALSE(tls);
  EXPECT_EQ(*GrpcTargetFromUrl("dns:///h:9000", &tls), "dns:///h:9000");
  EXPECT_FALSE(GrpcTargetFromUrl("http://", &tls).ok());
}

TEST(GrpcStreamClientTest, ErrorStatusMidStreamFailsOnlyThatRequest) {
  FakeCompletionServer server([](int, const v1::GenerateRequest& r) {
    int i = 0;
    std::sscanf(r.prompt().c_str(), "prompt %d", &i);
    Plan p;
    p.send_at_s = {0.010, 0.020};
    p.texts = {"a ", "b "};
    p.completion_tokens = 2;
    if (i % 2 == 1) {
      p.usage_on_last = false;
      p.status = grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "queue full");
    }
    return p;
  });
  GrpcClientOptions opt;
  opt.target = server.target();
  auto run = RunGrpcStreamingRequests(MakeJobs(6), opt);
  ASSERT_TRUE(run.ok()) << run.status();
  for (int i = 0; i < 6; ++i) {
    const RequestOutput& o = run->outputs[i];
    if (i % 2 == 1) {
      EXPECT_FALSE(o.success);
      EXPECT_EQ(o.error, "gRPC RESOURCE_EXHAUSTED: queue full");
    } else {
      EXPECT_TRUE(o.success) << o.error;
      EXPECT_EQ(o.output_tokens, 2);
      EXPECT_EQ(o.itl.size(), 1u);
    }
  }
  auto counter = MakeWordCounter();
  const BenchmarkMetrics m = CalculateMetrics(run->outputs, run->duration_s, *counter, {99}, {});
  EXPECT_EQ(m.completed, 3);
  EXPECT_EQ(m.failed, 3);
  EXPECT_EQ(m.total_output, 6);
  EXPECT_EQ(m.ttfts.size(), 3u);
}

TEST(GrpcStreamClientTest, OkStatusWithoutTextIsAFailure) {
  FakeCompletionServer server([](int, const v1::GenerateRequest&) {
    Plan p;
    p.send_at_s = {0.0};
    p.texts = {""};  // only the usage message
    return p;
  });
  GrpcClientOptions opt;
  opt.target = server.target();
  auto run = RunGrpcStreamingRequests(MakeJobs(1), opt);
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_FALSE(run->outputs[0].success);
  EXPECT_NE(run->outputs[0].error.find("Never received a valid chunk"), std::string::npos);
}

TEST(GrpcStreamClientTest, UnreachableTargetFailsEveryRequest) {
  // A port that was free a moment ago: nothing listens there.
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  close(fd);
  GrpcClientOptions opt;
  opt.target = absl::StrCat("127.0.0.1:", ntohs(addr.sin_port));
  opt.max_concurrency = 2;
  const double t0 = MonotonicSeconds();
  auto run = RunGrpcStreamingRequests(MakeJobs(4), opt);
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_LT(MonotonicSeconds() - t0, 5.0);
  for (const RequestOutput& o : run->outputs) {
    EXPECT_FALSE(o.success);
    EXPECT_EQ(o.error.rfind("gRPC UNAVAILABLE: ", 0), 0u) << o.error;
  }
  auto counter = MakeWordCounter();
  const BenchmarkMetrics m = CalculateMetrics(run->outputs, run->duration_s, *counter, {99}, {});
  EXPECT_EQ(m.completed, 0);
  EXPECT_EQ(m.failed, 4);
}

TEST(GrpcStreamClientTest, RequestTimeoutIsDeadlineExceeded) {
  FakeCompletionServer server([](int, const v1::GenerateRequest&) {
    Plan p;
    p.send_at_s = {0.0, 5.0};  // stalls after the first message
    p.texts = {"a", "b"};
    return p;
  });
  GrpcClientOptions opt;
  opt.target = server.target();
  opt.request_timeout_s = 0.2;
  const double t0 = MonotonicSeconds();
  auto run = RunGrpcStreamingRequests(MakeJobs(2), opt);
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_LT(MonotonicSeconds() - t0, 2.0);
  for (const RequestOutput& o : run->outputs) {
    EXPECT_FALSE(o.success);
    EXPECT_EQ(o.error.rfind("gRPC DEADLINE_EXCEEDED", 0), 0u) << o.error;
  }
}

TEST(GrpcStreamClientTest, MaxConcurrencyHolds) {
  FakeCompletionServer server([](int, const v1::GenerateRequest&) {
    Plan p;
    p.send_at_s = {0.010, 0.020, 0.030};
    p.texts = {"a", "b", "c"};
    p.completion_tokens = 3;
    return p;
  });
  GrpcClientOptions opt;
  opt.target = server.target();
  opt.max_concurrency = 3;
  auto run = RunGrpcStreamingRequests(MakeJobs(12), opt);
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(server.peak_concurrent(), 3);
  int queued = 0;
  for (const RequestOutput& o : run->outputs) {
    EXPECT_TRUE(o.success) << o.error;
    if (o.queue_time > 0.020) ++queued;
  }
  EXPECT_GE(queued, 8);  // all but the first wave waited at least most of a stream
}

TEST(GrpcStreamClientTest, StartsAtArrivalTimes) {
  FakeCompletionServer server([](int, const v1::GenerateRequest&) {
    Plan p;
    p.send_at_s = {0.0};
    p.texts = {"a"};
    return p;
  });
  GrpcClientOptions opt;
  opt.target = server.target();
  const std::vector<double> arrivals = {0.0, 0.05, 0.10, 0.15};
  auto run = RunGrpcStreamingRequests(MakeJobs(4, arrivals), opt);
  ASSERT_TRUE(run.ok()) << run.status();
  for (int i = 0; i < 4; ++i) {
    const RequestOutput& o = run->outputs[i];
    EXPECT_TRUE(o.success) << o.error;
    EXPECT_GE(o.start_time, arrivals[i]);
    EXPECT_LT(o.start_time, arrivals[i] + 0.010);
    EXPECT_LT(o.queue_time, 0.002);
  }
}

// The CLI: `kvasir bench serve --backend kvasir-grpc` against the fake server.
TEST(GrpcStreamClientTest, BenchServeRunsTheGrpcBackend) {
  FakeCompletionServer server([](int, const v1::GenerateRequest& r) {
    Plan p;
    const int n = r.sampling().max_tokens();
    for (int k = 0; k < n; ++k) {
      p.send_at_s.push_back(0.005 * (k + 1));
      p.texts.push_back("t ");
    }
    p.completion_tokens = n;
    return p;
  });
  const auto dir =
      std::filesystem::temp_directory_path() / absl::StrCat("kvasir_bench_grpc_test_", ::getpid());
  std::filesystem::create_directories(dir);
  std::vector<std::string> args = absl::StrSplit(
      absl::StrCat("serve --backend kvasir-grpc --base-url http://", server.target(),
                   " --num-prompts 10 --random-input-len 8 --random-output-len 4",
                   " --max-concurrency 2 --api-key sk-cli --disable-tqdm --save-result",
                   " --result-dir ", dir.string(), " --result-filename g.json"),
      ' ', absl::SkipEmpty());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  ::testing::internal::CaptureStdout();
  const int rc = kvasir::RunBenchServe(static_cast<int>(argv.size()), argv.data());
  const std::string out = ::testing::internal::GetCapturedStdout();
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("Model not specified: the server's model is used"), std::string::npos) << out;
  EXPECT_NE(out.find("Maximum request concurrency: 2\n"), std::string::npos) << out;
  EXPECT_NE(out.find("Successful requests:"), std::string::npos) << out;
  EXPECT_LE(server.peak_concurrent(), 2);
  for (const Served& s : server.served()) {
    EXPECT_EQ(s.request.model(), "");
    EXPECT_EQ(s.request.sampling().max_tokens(), 4);
    EXPECT_TRUE(s.request.sampling().ignore_eos());  // implied by the random dataset
    ASSERT_EQ(s.metadata.count("authorization"), 1u);
    EXPECT_EQ(s.metadata.find("authorization")->second, "Bearer sk-cli");
  }
  std::ifstream in(dir / "g.json");
  std::stringstream ss;
  ss << in.rdbuf();
  const nlohmann::json j = nlohmann::json::parse(ss.str());
  EXPECT_EQ(j["backend"], "kvasir-grpc");
  EXPECT_EQ(j["model_id"], "kvasir");
  EXPECT_EQ(j["completed"], 10);
  EXPECT_EQ(j["failed"], 0);
  EXPECT_EQ(j["total_output_tokens"], 40);
  EXPECT_EQ(j["itls"][0].size(), 3u);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kvasir::bench

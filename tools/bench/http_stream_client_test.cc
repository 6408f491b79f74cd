// The streaming client against the in-test fake server: client-measured TTFT/ITL/E2EL agree
// with the server's own send timestamps to within 1 ms, and every kind of failure is counted
// with its reason without touching the figures of the successful requests.
#include "tools/bench/http_stream_client.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "absl/strings/str_cat.h"
#include "tools/bench/testing/fake_openai_server.h"

namespace kvasir::bench {
namespace {

using testing::FakeOpenAiServer;
using testing::ServedRequest;
using testing::StreamPlan;

std::vector<HttpJob> MakeJobs(int n, int max_tokens, const std::vector<double>& arrivals = {}) {
  std::vector<HttpJob> jobs(n);
  for (int i = 0; i < n; ++i) {
    RequestParams p;
    p.model = "fake-model";
    p.prompt = "a b c d";
    p.max_tokens = max_tokens;
    jobs[i].body = BuildRequestBody(ApiKind::kCompletions, p);
    jobs[i].prompt_len = 4;
    jobs[i].request_id = absl::StrCat("req-", i);
    jobs[i].arrival_s = arrivals.empty() ? 0.0 : arrivals[i];
  }
  return jobs;
}

std::map<std::string, ServedRequest> ById(const std::vector<ServedRequest>& served) {
  std::map<std::string, ServedRequest> m;
  for (const auto& s : served) m[s.request_id] = s;
  return m;
}

// How far the client's aggregates are from those implied by the server's send timestamps.
struct TimingCheck {
  double ttft_ms = 0, tpot_ms = 0, itl_ms = 0, e2el_ms = 0;  // |client - server| of the means
  double median_delay_ms = 0;  // median receive delay of first/last chunks (always >= 0)
  double max(double a = 0) const {
    return std::max({a, ttft_ms, tpot_ms, itl_ms, e2el_ms, median_delay_ms});
  }
};

TimingCheck RunTimingScenario() {
  FakeOpenAiServer server([](int i, const nlohmann::json&) {
    StreamPlan p;
    p.first_delay_s = 0.060 + 0.020 * (i % 3);
    p.gaps_s.assign(5, 0.025);
    p.tokens_per_chunk = 2;
    return p;
  });
  server.Start();
  const int n = 12;
  const auto jobs = MakeJobs(n, 12);
  ClientOptions opt;
  opt.url = server.base_url() + "/v1/completions";
  int progress_calls = 0;
  opt.on_progress = [&](int done, int total) {
    ++progress_calls;
    EXPECT_EQ(total, n);
  };
  auto run = RunStreamingRequests(jobs, opt);
  EXPECT_TRUE(run.ok()) << run.status();
  if (!run.ok()) return {1e9, 1e9, 1e9, 1e9, 1e9};
  EXPECT_EQ(progress_calls, n);
  const auto served = ById(server.served());
  EXPECT_EQ(served.size(), static_cast<size_t>(n));

  std::vector<double> delays;  // client receive time - server send time (first, last chunk)
  std::vector<double> want_ttft, want_itl, want_e2el, want_tpot;
  for (int i = 0; i < n; ++i) {
    const RequestOutput& o = run->outputs[i];
    EXPECT_TRUE(o.success) << o.error;
    const ServedRequest& s = served.at(absl::StrCat("req-", i));
    EXPECT_EQ(s.chunk_sent_at.size(), 6u);
    EXPECT_EQ(o.itl.size(), 5u);
    if (s.chunk_sent_at.size() != 6 || o.itl.size() != 5) return {1e9, 1e9, 1e9, 1e9, 1e9};
    const double client_start = run->run_start + o.start_time;
    EXPECT_LE(client_start, s.received_at);
    want_ttft.push_back(s.chunk_sent_at[0] - client_start);
    for (int k = 1; k < 6; ++k) want_itl.push_back(s.chunk_sent_at[k] - s.chunk_sent_at[k - 1]);
    want_e2el.push_back(s.chunk_sent_at.back() - client_start);
    want_tpot.push_back((want_e2el.back() - want_ttft.back()) / 11);
    // A chunk cannot be read before it was sent (one clock for both sides).
    EXPECT_GT(o.ttft - want_ttft.back(), -1e-5);
    EXPECT_GT(o.latency - want_e2el.back(), -1e-5);
    delays.push_back(o.ttft - want_ttft.back());
    delays.push_back(o.latency - want_e2el.back());
    // The scripted schedule, with slack for a loaded machine.
    EXPECT_GE(o.ttft, 0.060 + 0.020 * (i % 3));
    EXPECT_LT(o.ttft, 0.060 + 0.020 * (i % 3) + 0.100);
    EXPECT_EQ(o.output_tokens, 12);  // from the usage chunk
    EXPECT_EQ(o.prompt_len, 4);      // usage.prompt_tokens
    std::string want_text;
    for (int k = 0; k < 12; ++k) want_text += "tok ";
    EXPECT_EQ(o.generated_text, want_text);
  }
  auto counter = MakeWordCounter();
  const BenchmarkMetrics m = CalculateMetrics(run->outputs, run->duration_s, *counter, {99}, {});
  EXPECT_EQ(m.total_output, 12 * n);
  EXPECT_DOUBLE_EQ(m.output_throughput, 12.0 * n / run->duration_s);
  EXPECT_DOUBLE_EQ(m.request_throughput, n / run->duration_s);
  EXPECT_EQ(m.max_concurrent_requests, n);  // all sent at once: every request overlaps

  auto mean_ms = [](const std::vector<double>& v) {
    double s = 0;
    for (double x : v) s += x;
    return s / v.size() * 1e3;
  };
  std::sort(delays.begin(), delays.end());
  TimingCheck c;
  c.ttft_ms = std::fabs(m.ttft.mean_ms - mean_ms(want_ttft));
  c.tpot_ms = std::fabs(m.tpot.mean_ms - mean_ms(want_tpot));
  c.itl_ms = std::fabs(m.itl.mean_ms - mean_ms(want_itl));
  c.e2el_ms = std::fabs(m.e2el.mean_ms - mean_ms(want_e2el));
  c.median_delay_ms = delays[delays.size() / 2] * 1e3;
  return c;
}

// The client's TTFT/TPOT/ITL/E2EL means equal those computed from the server's send
// timestamps to within 1 ms. What separates them is the OS waking the client thread; on a
// shared 2-core machine under a parallel build one run can catch a multi-ms stall, so the
// scenario may run up to three times and the best run must be within 1 ms.
TEST(HttpStreamClientTest, TimingsMatchServerSendTimes) {
  double best = 1e9;
  for (int attempt = 0; attempt < 3 && best >= 1.0; ++attempt) {
    const TimingCheck c = RunTimingScenario();
    std::printf(
        "attempt %d: |mean diff| ttft %.3f tpot %.3f itl %.3f e2el %.3f ms, median "
        "receive delay %.3f ms\n",
        attempt, c.ttft_ms, c.tpot_ms, c.itl_ms, c.e2el_ms, c.median_delay_ms);
    best = std::min(best, c.max());
  }
  EXPECT_LT(best, 1.0);
}

TEST(HttpStreamClientTest, ChatStreamsWithRoleChunk) {
  FakeOpenAiServer server([](int, const nlohmann::json&) {
    StreamPlan p;
    p.role_chunk = true;
    p.first_delay_s = 0.050;
    p.gaps_s.assign(2, 0.010);
    return p;
  });
  server.Start();
  std::vector<HttpJob> jobs(3);
  for (auto& j : jobs) {
    RequestParams p;
    p.model = "fake-model";
    p.prompt = "hi";
    p.max_tokens = 3;
    j.body = BuildRequestBody(ApiKind::kChatCompletions, p);
  }
  ClientOptions opt;
  opt.url = server.base_url() + "/v1/chat/completions";
  opt.kind = ApiKind::kChatCompletions;
  auto run = RunStreamingRequests(jobs, opt);
  ASSERT_TRUE(run.ok());
  for (const auto& o : run->outputs) {
    ASSERT_TRUE(o.success) << o.error;
    EXPECT_LT(o.ttft, 0.045);     // the role chunk, sent at once, is the first token
    EXPECT_EQ(o.itl.size(), 3u);  // role -> content 1 -> 2 -> 3
    EXPECT_EQ(o.generated_text, "tok tok tok ");
    EXPECT_EQ(o.output_tokens, 3);
  }
}

TEST(HttpStreamClientTest, FailuresAreCountedWithReasons) {
  FakeOpenAiServer server([](int, const nlohmann::json& body) {
    StreamPlan p;
    p.first_delay_s = 0.030;
    p.gaps_s.assign(3, 0.010);
    const int kind = body.value("max_tokens", 0);  // the test encodes the fault in max_tokens
    if (kind == 101) p.status = 500;
    if (kind == 102) p.fault = StreamPlan::Fault::kReset, p.fault_chunk = 2;
    if (kind == 103) p.fault = StreamPlan::Fault::kMalformed, p.fault_chunk = 1;
    if (kind == 104) p.fault = StreamPlan::Fault::kStall, p.fault_chunk = 1;
    if (kind == 105) p.status = 429;
    return p;
  });
  server.Start();
  const int n = 36;
  std::vector<HttpJob> jobs;
  for (int i = 0; i < n; ++i) {
    const int kind = i % 6 == 0 ? 4 : 100 + i % 6;  // 0: ok; 1..5: faults
    auto j = MakeJobs(1, kind);
    j[0].request_id = absl::StrCat("req-", i);
    jobs.push_back(j[0]);
  }
  ClientOptions opt;
  opt.url = server.base_url() + "/v1/completions";
  opt.request_timeout_s = 1.0;
  auto run = RunStreamingRequests(jobs, opt);
  ASSERT_TRUE(run.ok()) << run.status();
  std::map<int, int> failures_by_kind;
  for (int i = 0; i < n; ++i) {
    const RequestOutput& o = run->outputs[i];
    const int kind = i % 6;
    if (kind == 0) {
      EXPECT_TRUE(o.success) << o.error;
      continue;
    }
    EXPECT_FALSE(o.success) << "request " << i;
    ++failures_by_kind[kind];
    switch (kind) {
      case 1:
        EXPECT_EQ(o.error.rfind("HTTP 500: ", 0), 0u) << o.error;
        break;
      case 2:
        EXPECT_TRUE(o.error.find("reset") != std::string::npos ||
                    o.error.find("closed") != std::string::npos ||
                    o.error.find("Recv failure") != std::string::npos)
            << o.error;
        break;
      case 3:
        EXPECT_NE(o.error.find("malformed stream chunk"), std::string::npos) << o.error;
        break;
      case 4:
        EXPECT_NE(o.error.find("Timeout"), std::string::npos) << o.error;
        break;
      case 5:
        EXPECT_EQ(o.error.rfind("HTTP 429", 0), 0u) << o.error;
        break;
    }
  }
  EXPECT_EQ(failures_by_kind.size(), 5u);
  auto counter = MakeWordCounter();
  const BenchmarkMetrics m = CalculateMetrics(run->outputs, run->duration_s, *counter, {99}, {});
  EXPECT_EQ(m.completed, n / 6);
  EXPECT_EQ(m.failed, n - n / 6);
  // Failed requests do not leak into the latency figures: the successful ones all stream
  // 4 chunks 30 ms + 3 x 10 ms after sending.
  EXPECT_GE(m.ttft.mean_ms, 30.0);
  EXPECT_LT(m.ttft.percentiles_ms[0].second, 80.0);
  EXPECT_LT(m.e2el.percentiles_ms[0].second, 120.0);
  EXPECT_EQ(m.total_output, 4 * (n / 6));
}

TEST(HttpStreamClientTest, ConnectionRefusedFailsEveryRequest) {
  // Bind and close a port so nothing listens there.
  FakeOpenAiServer probe;
  const int port = probe.Start();
  probe.Stop();
  ClientOptions opt;
  opt.url = absl::StrCat("http://127.0.0.1:", port, "/v1/completions");
  auto run = RunStreamingRequests(MakeJobs(5, 4), opt);
  ASSERT_TRUE(run.ok());
  for (const auto& o : run->outputs) {
    EXPECT_FALSE(o.success);
    EXPECT_NE(o.error.find("connect"), std::string::npos) << o.error;
  }
}

TEST(HttpStreamClientTest, MaxConcurrencyQueuesRequests) {
  FakeOpenAiServer server([](int, const nlohmann::json&) {
    StreamPlan p;
    p.first_delay_s = 0.040;
    p.gaps_s.assign(1, 0.010);
    return p;
  });
  server.Start();
  ClientOptions opt;
  opt.url = server.base_url() + "/v1/completions";
  opt.max_concurrency = 2;
  auto run = RunStreamingRequests(MakeJobs(8, 2), opt);
  ASSERT_TRUE(run.ok());
  auto counter = MakeWordCounter();
  const BenchmarkMetrics m = CalculateMetrics(run->outputs, run->duration_s, *counter, {99}, {});
  EXPECT_EQ(m.completed, 8);
  EXPECT_LE(m.max_concurrent_requests, 2);
  // Requests 6 and 7 waited for three earlier pairs (~50 ms each).
  EXPECT_GT(run->outputs[7].queue_time, 0.120);
  EXPECT_LT(run->outputs[0].queue_time, 0.010);
  EXPECT_GT(run->duration_s, 0.190);
}

TEST(HttpStreamClientTest, ArrivalScheduleIsFollowed) {
  FakeOpenAiServer server;
  server.Start();
  std::vector<double> arrivals;
  for (int i = 0; i < 10; ++i) arrivals.push_back(0.025 * i);
  ClientOptions opt;
  opt.url = server.base_url() + "/v1/completions";
  auto run = RunStreamingRequests(MakeJobs(10, 2, arrivals), opt);
  ASSERT_TRUE(run.ok());
  for (int i = 0; i < 10; ++i) {
    EXPECT_GE(run->outputs[i].start_time, arrivals[i]);
    EXPECT_LT(run->outputs[i].start_time, arrivals[i] + 0.010) << i;
  }
}

TEST(HttpGetTest, FetchesModels) {
  FakeOpenAiServer server;
  server.Start();
  auto body = HttpGet(server.base_url() + "/v1/models", {}, 5);
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_NE(body->find("fake-model"), std::string::npos);
  EXPECT_FALSE(HttpGet(server.base_url() + "/nope", {}, 5).ok());
}

}  // namespace
}  // namespace kvasir::bench

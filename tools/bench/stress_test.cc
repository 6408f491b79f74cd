// 2,000 concurrent streams through one event-loop thread against the fake server on loopback:
// none dropped, every token accounted for.
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "tools/bench/http_stream_client.h"
#include "tools/bench/testing/fake_openai_server.h"

namespace kvasir::bench {
namespace {

TEST(StressTest, TwoThousandConcurrentStreams) {
  RaiseFileLimit();  // client and server sockets: ~4,000 descriptors in this process
  constexpr int kStreams = 2000;
  constexpr int kChunks = 10;
  testing::FakeOpenAiServer server([](int, const nlohmann::json&) {
    testing::StreamPlan p;
    // Long enough that every stream is open at once, even if connecting them all takes a while.
    p.first_delay_s = 1.5;
    p.gaps_s.assign(kChunks - 1, 0.050);
    return p;
  });
  server.Start();
  std::vector<HttpJob> jobs(kStreams);
  for (int i = 0; i < kStreams; ++i) {
    RequestParams p;
    p.model = "fake-model";
    p.prompt = "x y";
    p.max_tokens = kChunks;
    jobs[i].body = BuildRequestBody(ApiKind::kCompletions, p);
    jobs[i].request_id = absl::StrCat("s", i);
  }
  ClientOptions opt;
  opt.url = server.base_url() + "/v1/completions";
  opt.request_timeout_s = 60;
  auto run = RunStreamingRequests(jobs, opt);
  ASSERT_TRUE(run.ok()) << run.status();
  int ok = 0;
  std::string first_error;
  for (const auto& o : run->outputs) {
    if (o.success && o.output_tokens == kChunks && o.itl.size() == kChunks - 1) ++ok;
    if (!o.success && first_error.empty()) first_error = o.error;
  }
  EXPECT_EQ(ok, kStreams) << first_error;
  EXPECT_GE(server.max_open_connections(), kStreams);
  auto counter = MakeWordCounter();
  const BenchmarkMetrics m = CalculateMetrics(run->outputs, run->duration_s, *counter, {99}, {});
  EXPECT_EQ(m.completed, kStreams);
  EXPECT_EQ(m.total_output, kStreams * kChunks);
  EXPECT_EQ(m.max_concurrent_requests, kStreams);
  std::printf("2000 streams: duration %.2f s, p99 TTFT %.1f ms, p99 ITL %.1f ms\n", run->duration_s,
              m.ttft.percentiles_ms[0].second, m.itl.percentiles_ms[0].second);
}

}  // namespace
}  // namespace kvasir::bench

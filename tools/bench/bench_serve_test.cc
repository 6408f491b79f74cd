// End to end: `kvasir bench serve` flags -> run against the fake server -> vLLM's printed
// labels and result JSON (keys and types as `vllm bench serve` writes them).
#include "tools/bench/bench_serve.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "tools/bench/testing/fake_openai_server.h"

namespace kvasir::bench {
namespace {

using testing::FakeOpenAiServer;
using testing::StreamPlan;

// Runs `kvasir bench serve` with space-separated flags (no argument contains a space).
int RunServe(const std::string& flags) {
  std::vector<std::string> args = absl::StrSplit(flags, ' ', absl::SkipEmpty());
  args.insert(args.begin(), "serve");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  return kvasir::RunBenchServe(static_cast<int>(argv.size()), argv.data());
}

std::filesystem::path TempDir() {
  auto d =
      std::filesystem::temp_directory_path() / absl::StrCat("kvasir_bench_serve_test_", ::getpid());
  std::filesystem::create_directories(d);
  return d;
}

nlohmann::json ReadJson(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return nlohmann::json::parse(ss.str());
}

TEST(BenchServeTest, PrintsVllmReportAndSavesVllmJson) {
  // Even requests: TTFT 20 ms; odd: 150 ms. Goodput ttft:100 keeps exactly half.
  FakeOpenAiServer server([](int i, const nlohmann::json& body) {
    StreamPlan p;
    p.first_delay_s = i % 2 == 0 ? 0.020 : 0.150;
    p.gaps_s.assign(body.value("max_tokens", 1) - 1, 0.005);
    return p;
  });
  server.Start();
  const auto dir = TempDir();
  ::testing::internal::CaptureStdout();
  const int rc = RunServe(absl::StrCat(
      "--base-url ", server.base_url(),
      " --num-prompts 20 --random-input-len 16 --random-output-len 4 --request-rate 200",
      " --goodput ttft:100 --percentile-metrics ttft,tpot,itl,e2el",
      " --metric-percentiles 50,99.9 --save-result --result-dir ", dir.string(),
      " --result-filename r.json --disable-tqdm --plot ", (dir / "p.svg").string(),
      " --metadata note=test --num-warmups 2"));
  const std::string out = ::testing::internal::GetCapturedStdout();
  ASSERT_EQ(rc, 0) << out;
  for (const char* label : {"Model not specified, fetching first model from server...",
                            "First model name: fake-model",
                            "Warming up with 2 requests...",
                            "Warmup run completed.",
                            "Traffic request rate: 200.0",
                            "Burstiness factor: 1.0 (Poisson process)",
                            "Maximum request concurrency: None",
                            "============ Serving Benchmark Result ============",
                            "Successful requests:",
                            "Failed requests:",
                            "Request rate configured (RPS):",
                            "Benchmark duration (s):",
                            "Total input tokens:",
                            "Total generated tokens:",
                            "Request throughput (req/s):",
                            "Request goodput (req/s):",
                            "Output token throughput (tok/s):",
                            "Peak output token throughput (tok/s):",
                            "Peak concurrent requests:",
                            "Total token throughput (tok/s):",
                            "---------------Time to First Token----------------",
                            "Mean TTFT (ms):",
                            "Median TTFT (ms):",
                            "P50 TTFT (ms):",
                            "P99.9 TTFT (ms):",
                            "-----Time per Output Token (excl. 1st token)------",
                            "Mean TPOT (ms):",
                            "---------------Inter-token Latency----------------",
                            "P99.9 ITL (ms):",
                            "----------------End-to-end Latency----------------",
                            "Mean E2EL (ms):",
                            "=================================================="}) {
    EXPECT_NE(out.find(label), std::string::npos) << "missing: " << label << "\n" << out;
  }
  // vLLM's column layout: label padded to 40, a space, value.
  EXPECT_NE(out.find("Successful requests:                     20"), std::string::npos) << out;

  const nlohmann::json j = ReadJson(dir / "r.json");
  EXPECT_EQ(j["backend"], "openai");
  EXPECT_EQ(j["endpoint_type"], "openai");
  EXPECT_TRUE(j["label"].is_null());
  EXPECT_EQ(j["model_id"], "fake-model");
  EXPECT_TRUE(j["tokenizer_id"].is_null());
  EXPECT_EQ(j["num_prompts"], 20);
  EXPECT_EQ(j["note"], "test");
  EXPECT_TRUE(j["request_rate"].is_number_float());
  EXPECT_EQ(j["request_rate"], 200.0);
  EXPECT_EQ(j["burstiness"], 1.0);
  EXPECT_TRUE(j["max_concurrency"].is_null());
  EXPECT_TRUE(j["date"].is_string());
  EXPECT_TRUE(j["duration"].is_number_float());
  EXPECT_EQ(j["completed"], 20);
  EXPECT_EQ(j["failed"], 0);
  EXPECT_TRUE(j["total_input_tokens"].is_number_integer());
  EXPECT_EQ(j["total_output_tokens"], 80);
  const double duration = j["duration"].get<double>();
  EXPECT_NEAR(j["request_throughput"].get<double>(), 20 / duration, 1e-9);
  EXPECT_NEAR(j["request_goodput"].get<double>(), 10 / duration, 1e-9);
  EXPECT_NEAR(j["output_throughput"].get<double>(), 80 / duration, 1e-9);
  EXPECT_TRUE(j["total_token_throughput"].is_number_float());
  for (const char* list : {"input_lens", "output_lens", "ttfts", "itls", "latencies", "start_times",
                           "generated_texts", "errors"}) {
    ASSERT_TRUE(j[list].is_array()) << list;
    EXPECT_EQ(j[list].size(), 20u) << list;
  }
  EXPECT_EQ(j["input_lens"][0], 16);  // the fallback word count, echoed by usage
  EXPECT_EQ(j["output_lens"][0], 4);
  EXPECT_TRUE(j["ttfts"][0].is_number_float());
  EXPECT_TRUE(j["itls"][0].is_array());
  EXPECT_EQ(j["itls"][0].size(), 3u);
  EXPECT_EQ(j["errors"][0], "");
  EXPECT_TRUE(j["max_output_tokens_per_s"].is_number());
  EXPECT_TRUE(j["max_concurrent_requests"].is_number_integer());
  for (const char* metric : {"ttft", "tpot", "itl", "e2el"}) {
    for (const char* stat : {"mean", "median", "std", "p50", "p99.9"}) {
      const std::string key = absl::StrCat(stat, "_", metric, "_ms");
      ASSERT_TRUE(j.contains(key)) << key;
      EXPECT_TRUE(j[key].is_number_float()) << key;
    }
  }
  EXPECT_FALSE(j.contains("p99_ttft_ms"));  // only the requested percentiles
  // Median TTFT sits between the two scripted groups; the means agree with the raw list.
  double sum = 0;
  for (const auto& t : j["ttfts"]) sum += t.get<double>();
  EXPECT_NEAR(j["mean_ttft_ms"].get<double>(), sum / 20 * 1000, 1e-6);
  EXPECT_TRUE(std::filesystem::exists(dir / "p.svg"));
  std::filesystem::remove_all(dir);
}

TEST(BenchServeTest, ChatBackendAndFailuresInJson) {
  FakeOpenAiServer server([](int i, const nlohmann::json&) {
    StreamPlan p;
    p.gaps_s.assign(2, 0.001);
    if (i % 4 == 3) p.status = 500;
    return p;
  });
  server.Start();
  const auto dir = TempDir();
  ::testing::internal::CaptureStdout();
  const int rc = RunServe(absl::StrCat(
      "--backend openai-chat --base-url ", server.base_url(),
      " --model m --num-prompts 8 --random-input-len 8 --random-output-len 3",
      " --max-concurrency 3 --save-result --result-dir ", dir.string(), " --disable-tqdm"));
  const std::string out = ::testing::internal::GetCapturedStdout();
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("Failed requests during benchmark run detected (capping to 10):"),
            std::string::npos);
  EXPECT_NE(out.find("Error 0: HTTP 500"), std::string::npos) << out;
  EXPECT_NE(out.find("Maximum request concurrency:             3"), std::string::npos) << out;
  // vLLM's default file name: {backend}-{rate}qps-concurrency{N}-{model}-{date}.json
  std::filesystem::path saved;
  for (const auto& e : std::filesystem::directory_iterator(dir)) saved = e.path();
  ASSERT_FALSE(saved.empty());
  EXPECT_EQ(saved.filename().string().rfind("openai-chat-infqps-concurrency3-m-", 0), 0u) << saved;
  const nlohmann::json j = ReadJson(saved);
  EXPECT_EQ(j["completed"], 6);
  EXPECT_EQ(j["failed"], 2);
  EXPECT_EQ(j["total_input_tokens"], 6 * 8);  // usage.prompt_tokens of the chat messages
  EXPECT_EQ(j["request_rate"], "inf");
  EXPECT_EQ(j["max_concurrency"], 3);
  EXPECT_TRUE(j["request_goodput"].is_null());
  EXPECT_EQ(j["errors"][3].get<std::string>().rfind("HTTP 500", 0), 0u);
  EXPECT_EQ(j["output_lens"][3], 0);
  std::filesystem::remove_all(dir);
}

// The gRPC backend itself is tested in grpc_stream_client_test.cc; here: a request field that
// kvasir.v1.GenerateRequest cannot carry is a usage error before anything is sent.
TEST(BenchServeTest, GrpcBackendRejectsFieldsItCannotSend) {
  ::testing::internal::CaptureStdout();
  ::testing::internal::CaptureStderr();
  const int rc = RunServe(
      "--backend kvasir-grpc --port 1 --num-prompts 2 --random-input-len 4 "
      "--random-output-len 2 --disable-tqdm --extra-body {\"logprobs\":1}");
  ::testing::internal::GetCapturedStdout();
  const std::string err = ::testing::internal::GetCapturedStderr();
  if (err.find("built without Kvasir's gRPC protos") != std::string::npos) {
    GTEST_SKIP() << "kvasir-bench built without kvasir_proto";
  }
  EXPECT_EQ(rc, 2) << err;
  EXPECT_NE(err.find("'logprobs' has no field in kvasir.v1.GenerateRequest"), std::string::npos)
      << err;
}

TEST(BenchServeTest, BadFlagsAreUsageErrors) {
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(RunServe("--no-such-flag"), 2);
  EXPECT_EQ(RunServe("--model m --goodput ttft=5"), 2);
  EXPECT_EQ(RunServe("--model m --goodput foo:5"), 2);
  EXPECT_EQ(RunServe("--model m --random-range-ratio 1.5"), 2);
  EXPECT_EQ(RunServe("--model m --max-concurrency 0"), 2);
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("unknown option --no-such-flag"), std::string::npos) << err;
}

TEST(BenchServeTest, UnreachableServerWithoutModelIsASetupError) {
  FakeOpenAiServer probe;
  const int port = probe.Start();
  probe.Stop();
  ::testing::internal::CaptureStderr();
  ::testing::internal::CaptureStdout();
  EXPECT_EQ(RunServe(absl::StrCat("--port ", std::to_string(port), " --disable-tqdm")), 1);
  ::testing::internal::GetCapturedStdout();
  EXPECT_NE(::testing::internal::GetCapturedStderr().find("Failed to fetch models"),
            std::string::npos);
}

}  // namespace
}  // namespace kvasir::bench

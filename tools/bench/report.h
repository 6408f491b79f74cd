// The end-of-run report, printed and saved exactly as `vllm bench serve` does: the same
// labels and column layout ("{:<40} {:<10.2f}"), and a result JSON with vLLM's keys and types.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "tools/bench/metrics.h"

namespace kvasir::bench {

struct RunInfo {
  std::string date;     // %Y%m%d-%H%M%S
  std::string backend;  // openai | openai-chat | kvasir-grpc
  std::optional<std::string> label;
  std::string model_id;
  std::optional<std::string> tokenizer_id;  // nullopt: approximate word counts
  int num_prompts = 0;
  double request_rate = 0;  // +inf: all at once
  double burstiness = 1.0;
  int max_concurrency = 0;  // 0: None
  std::vector<std::string> percentile_metrics = {"ttft", "tpot", "itl"};
  std::vector<double> percentiles = {99};
  GoodputConfig goodput;
  std::vector<std::pair<std::string, std::string>> metadata;  // --metadata KEY=VALUE
};

// Python's repr of a float: "inf", "10.0", "0.5".
std::string PyFloat(double v);

// The "Failed requests ..." lines (first 10 errors, then counts per reason) and the
// "==== Serving Benchmark Result ====" block.
std::string FormatReport(const RunInfo& info, const BenchmarkMetrics& m, double duration_s,
                         const std::vector<RequestOutput>& outputs);

// vLLM's result JSON, keys in vLLM's order: date, endpoint_type, backend, label, model_id,
// tokenizer_id, num_prompts, request_rate, burstiness, max_concurrency, duration, completed,
// failed, total_input_tokens, total_output_tokens, request_throughput, request_goodput,
// output_throughput, total_token_throughput, input_lens, output_lens, ttfts, itls,
// latencies, start_times, queue_times, generated_texts, errors, max_output_tokens_per_s,
// max_concurrent_requests, rtfx, and {mean,median,std,pN}_{metric}_ms for selected metrics.
nlohmann::ordered_json BuildResultJson(const RunInfo& info, const BenchmarkMetrics& m,
                                       double duration_s,
                                       const std::vector<RequestOutput>& outputs);

// "{label}-{rate}qps[-concurrency{N}]-{model basename}-{date}.json", as vLLM names it.
std::string DefaultResultFilename(const RunInfo& info);

}  // namespace kvasir::bench

// Per-request measurements and their aggregation, defined exactly as `vllm bench serve`
// (vllm/benchmarks/serve.py, calculate_metrics) defines them. All times in seconds.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "tools/bench/token_counter.h"

namespace kvasir::bench {

// What one request produced (vLLM's RequestFuncOutput).
struct RequestOutput {
  bool success = false;
  double start_time = 0;    // when the request was sent, seconds from the start of the run
  double queue_time = 0;    // client-side wait for a --max-concurrency slot before start_time
  double ttft = 0;          // first chunk with non-empty `choices` - start_time
  double latency = 0;       // E2EL: last chunk with non-empty `choices` - start_time
  std::vector<double> itl;  // gaps between consecutive chunks with non-empty `choices`
  int output_tokens = 0;    // usage.completion_tokens when the server sent it, else 0
  int prompt_len = 0;       // usage.prompt_tokens when sent, else the dataset's count
  std::string generated_text;
  std::string error;  // why it failed; empty on success
};

// mean / median / std (population) / percentiles of one metric, in milliseconds.
struct MetricSummary {
  double mean_ms = 0;
  double median_ms = 0;
  double std_ms = 0;
  std::vector<std::pair<double, double>> percentiles_ms;  // (p, value)
};

// numpy.percentile with linear interpolation; `values` need not be sorted. 0 when empty
// (numpy of `values or 0`).
double Percentile(std::vector<double> values, double p);
MetricSummary Summarize(const std::vector<double>& seconds, const std::vector<double>& percentiles);

struct BenchmarkMetrics {
  int completed = 0;
  int failed = 0;
  long total_input = 0;
  long total_output = 0;
  double request_throughput = 0;
  double request_goodput = 0;
  double output_throughput = 0;
  double total_token_throughput = 0;
  MetricSummary ttft, tpot, itl, e2el;
  double max_output_tokens_per_s = 0;
  int max_concurrent_requests = 0;
  std::vector<int> actual_output_lens;  // per request; 0 for failed ones
  bool output_tokens_counted = false;   // some counts came from the TokenCounter, not usage
  // Output tokens per 1-second bucket and requests active in each bucket, from the first
  // successful request's start (for plots).
  std::vector<double> tokens_per_second;
  std::vector<double> concurrent_requests_per_second;
  // Raw values in seconds (successful requests only), for plots.
  std::vector<double> ttfts, tpots, itls, e2els;
};

// Goodput SLOs in milliseconds, keyed by "ttft", "tpot", "e2el".
using GoodputConfig = std::map<std::string, double>;

BenchmarkMetrics CalculateMetrics(const std::vector<RequestOutput>& outputs, double duration_s,
                                  const TokenCounter& counter,
                                  const std::vector<double>& percentiles,
                                  const GoodputConfig& goodput);

}  // namespace kvasir::bench

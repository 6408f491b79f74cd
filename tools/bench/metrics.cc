#include "tools/bench/metrics.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace kvasir::bench {

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  const double rank = p / 100.0 * static_cast<double>(values.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(lo + 1, values.size() - 1);
  const double frac = rank - static_cast<double>(lo);
  return values[lo] + (values[hi] - values[lo]) * frac;
}

MetricSummary Summarize(const std::vector<double>& seconds,
                        const std::vector<double>& percentiles) {
  MetricSummary s;
  if (!seconds.empty()) {
    const double n = static_cast<double>(seconds.size());
    const double mean = std::accumulate(seconds.begin(), seconds.end(), 0.0) / n;
    double var = 0;
    for (double v : seconds) var += (v - mean) * (v - mean);
    s.mean_ms = mean * 1000.0;
    s.std_ms = std::sqrt(var / n) * 1000.0;
    s.median_ms = Percentile(seconds, 50) * 1000.0;
  }
  for (double p : percentiles) s.percentiles_ms.emplace_back(p, Percentile(seconds, p) * 1000.0);
  return s;
}

BenchmarkMetrics CalculateMetrics(const std::vector<RequestOutput>& outputs, double duration_s,
                                  const TokenCounter& counter,
                                  const std::vector<double>& percentiles,
                                  const GoodputConfig& goodput) {
  BenchmarkMetrics m;
  std::vector<double> all_tpots;  // one per successful request, 0 when output_len <= 1
  for (const RequestOutput& o : outputs) {
    if (!o.success) {
      m.actual_output_lens.push_back(0);
      ++m.failed;
      continue;
    }
    int output_len = o.output_tokens;
    if (output_len <= 0) {
      // No usage chunk: count the generated text (several tokens may share one chunk, so the
      // number of chunks is not the number of tokens).
      output_len = counter.Count(o.generated_text);
      m.output_tokens_counted = true;
    }
    m.actual_output_lens.push_back(output_len);
    m.total_input += o.prompt_len;
    double tpot = 0;
    if (output_len > 1) {
      tpot = (o.latency - o.ttft) / (output_len - 1);
      m.tpots.push_back(tpot);
    }
    all_tpots.push_back(tpot);
    m.itls.insert(m.itls.end(), o.itl.begin(), o.itl.end());
    m.ttfts.push_back(o.ttft);
    m.e2els.push_back(o.latency);
    ++m.completed;
  }
  for (int len : m.actual_output_lens) m.total_output += len;

  int good = 0;
  if (!goodput.empty()) {
    for (size_t i = 0; i < m.ttfts.size(); ++i) {
      bool ok = true;
      for (const auto& [name, slo_ms] : goodput) {
        const double v = name == "ttft" ? m.ttfts[i] : name == "tpot" ? all_tpots[i] : m.e2els[i];
        if (!(slo_ms / 1000.0 >= v)) ok = false;
      }
      if (ok) ++good;
    }
  }

  m.request_throughput = m.completed / duration_s;
  m.request_goodput = good / duration_s;
  m.output_throughput = static_cast<double>(m.total_output) / duration_s;
  m.total_token_throughput = static_cast<double>(m.total_input + m.total_output) / duration_s;
  m.ttft = Summarize(m.ttfts, percentiles);
  m.tpot = Summarize(m.tpots, percentiles);
  m.itl = Summarize(m.itls, percentiles);
  m.e2el = Summarize(m.e2els, percentiles);

  // Peak output tokens/s over 1-second buckets and exact peak concurrency (sweep line over
  // half-open [start, end) intervals; departures before arrivals at equal times).
  double min_start = 0, max_end = 0;
  bool any = false;
  for (const RequestOutput& o : outputs) {
    if (!o.success) continue;
    min_start = any ? std::min(min_start, o.start_time) : o.start_time;
    max_end = any ? std::max(max_end, o.start_time + o.latency) : o.start_time + o.latency;
    any = true;
  }
  if (any) {
    const int buckets = static_cast<int>(std::ceil(max_end - min_start)) + 1;
    m.tokens_per_second.assign(buckets, 0.0);
    m.concurrent_requests_per_second.assign(buckets, 0.0);
    std::vector<std::pair<double, int>> events;
    for (const RequestOutput& o : outputs) {
      if (!o.success) continue;
      double t = o.start_time + o.ttft;
      auto add_token = [&](double when) {
        const int b = static_cast<int>(when - min_start);
        if (b >= 0 && b < buckets) m.tokens_per_second[b] += 1;
      };
      add_token(t);
      for (double gap : o.itl) add_token(t += gap);
      const int first = static_cast<int>(o.start_time - min_start);
      const int last = static_cast<int>(std::ceil(o.start_time + o.latency - min_start));
      for (int s = std::max(first, 0); s < std::min(buckets, last); ++s) {
        m.concurrent_requests_per_second[s] += 1;
      }
      events.emplace_back(o.start_time, 1);
      events.emplace_back(o.start_time + o.latency, -1);
    }
    std::sort(events.begin(), events.end());
    int cur = 0;
    for (const auto& e : events) {
      cur += e.second;
      m.max_concurrent_requests = std::max(m.max_concurrent_requests, cur);
    }
    m.max_output_tokens_per_s =
        *std::max_element(m.tokens_per_second.begin(), m.tokens_per_second.end());
  }
  return m;
}

}  // namespace kvasir::bench

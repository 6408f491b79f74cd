#include "tools/bench/report.h"

#include <charconv>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kvasir::bench {
namespace {

std::string Center(const std::string& s, size_t width, char fill) {
  if (s.size() >= width) return s;
  const size_t pad = width - s.size();
  return std::string(pad / 2, fill) + s + std::string(pad - pad / 2, fill);
}

void Line(std::string* out, const std::string& label, const std::string& value) {
  absl::StrAppendFormat(out, "%-40s %-10s\n", label, value);
}
void LineF(std::string* out, const std::string& label, double value) {
  absl::StrAppendFormat(out, "%-40s %-10.2f\n", label, value);
}

std::string PercentileWord(double p) {
  if (std::floor(p) == p) return absl::StrCat(static_cast<long>(p));
  return PyFloat(p);
}

struct MetricDesc {
  const char* key;
  const char* name;
  const char* header;
};
constexpr MetricDesc kMetrics[] = {
    {"ttft", "TTFT", "Time to First Token"},
    {"tpot", "TPOT", "Time per Output Token (excl. 1st token)"},
    {"itl", "ITL", "Inter-token Latency"},
    {"e2el", "E2EL", "End-to-end Latency"},
    {"client_queue_time", "Client Queue Time", "Client-side Queueing"},
    {"e2el_including_client_queue", "E2EL incl. Client Queue",
     "Queue-inclusive End-to-end Latency"},
};

bool Selected(const RunInfo& info, const std::string& key) {
  for (const auto& k : info.percentile_metrics) {
    if (k == key) return true;
  }
  return false;
}

// The summary for one metric key, or nullopt when it does not apply to this run.
std::optional<MetricSummary> SummaryFor(const RunInfo& info, const BenchmarkMetrics& m,
                                        const std::vector<RequestOutput>& outputs,
                                        const std::string& key) {
  if (key == "ttft") return m.ttft;
  if (key == "tpot") return m.tpot;
  if (key == "itl") return m.itl;
  if (key == "e2el") return m.e2el;
  if (info.max_concurrency <= 0) return std::nullopt;
  std::vector<double> v;
  if (key == "client_queue_time") {
    for (const auto& o : outputs) {
      if (o.success) v.push_back(o.queue_time);
    }
    return Summarize(v, info.percentiles);
  }
  if (key == "e2el_including_client_queue" && !std::isinf(info.request_rate)) {
    for (const auto& o : outputs) {
      if (o.success) v.push_back(o.latency + o.queue_time);
    }
    return Summarize(v, info.percentiles);
  }
  return std::nullopt;
}

}  // namespace

std::string PyFloat(double v) {
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  if (std::isnan(v)) return "nan";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), v);
  std::string s(buf, res.ptr);
  if (s.find_first_of(".e") == std::string::npos) s += ".0";
  return s;
}

std::string FormatReport(const RunInfo& info, const BenchmarkMetrics& m, double duration_s,
                         const std::vector<RequestOutput>& outputs) {
  std::string out;
  if (m.failed > 0) {
    out += "Failed requests during benchmark run detected (capping to 10):\n";
    int shown = 0;
    std::map<std::string, int> reasons;
    for (const auto& o : outputs) {
      if (o.success) continue;
      if (shown < 10) absl::StrAppend(&out, "Error ", shown++, ": ", o.error, "\n");
      // Group by the reason's first line, up to the first ':' detail, to count kinds.
      std::string kind = o.error.substr(0, o.error.find('\n'));
      if (kind.size() > 120) kind = kind.substr(0, 120) + "...";
      ++reasons[kind];
    }
    out += "Failure reasons (count):\n";
    for (const auto& [reason, n] : reasons) absl::StrAppend(&out, "  ", n, "  ", reason, "\n");
  }
  out += Center(" Serving Benchmark Result ", 50, '=') + "\n";
  Line(&out, "Successful requests:", absl::StrCat(m.completed));
  Line(&out, "Failed requests:", absl::StrCat(m.failed));
  if (info.max_concurrency > 0) {
    Line(&out, "Maximum request concurrency:", absl::StrCat(info.max_concurrency));
  }
  if (!std::isinf(info.request_rate))
    LineF(&out, "Request rate configured (RPS):", info.request_rate);
  LineF(&out, "Benchmark duration (s):", duration_s);
  Line(&out, "Total input tokens:", absl::StrCat(m.total_input));
  Line(&out, "Total generated tokens:", absl::StrCat(m.total_output));
  LineF(&out, "Request throughput (req/s):", m.request_throughput);
  if (!info.goodput.empty()) LineF(&out, "Request goodput (req/s):", m.request_goodput);
  LineF(&out, "Output token throughput (tok/s):", m.output_throughput);
  LineF(&out, "Peak output token throughput (tok/s):", m.max_output_tokens_per_s);
  LineF(&out, "Peak concurrent requests:", m.max_concurrent_requests);
  LineF(&out, "Total token throughput (tok/s):", m.total_token_throughput);
  for (const MetricDesc& d : kMetrics) {
    if (!Selected(info, d.key)) continue;
    auto s = SummaryFor(info, m, outputs, d.key);
    if (!s) continue;
    out += Center(d.header, 50, '-') + "\n";
    LineF(&out, absl::StrCat("Mean ", d.name, " (ms):"), s->mean_ms);
    LineF(&out, absl::StrCat("Median ", d.name, " (ms):"), s->median_ms);
    for (const auto& [p, v] : s->percentiles_ms) {
      LineF(&out, absl::StrCat("P", PercentileWord(p), " ", d.name, " (ms):"), v);
    }
  }
  out += std::string(50, '=') + "\n";
  return out;
}

nlohmann::ordered_json BuildResultJson(const RunInfo& info, const BenchmarkMetrics& m,
                                       double duration_s,
                                       const std::vector<RequestOutput>& outputs) {
  // ordered_json keeps vLLM's key order (a Python dict's insertion order).
  using json = nlohmann::ordered_json;
  json r = json::object();
  r["date"] = info.date;
  r["endpoint_type"] = info.backend;
  r["backend"] = info.backend;
  r["label"] = info.label ? json(*info.label) : json(nullptr);
  r["model_id"] = info.model_id;
  r["tokenizer_id"] = info.tokenizer_id ? json(*info.tokenizer_id) : json(nullptr);
  r["num_prompts"] = info.num_prompts;
  for (const auto& [k, v] : info.metadata) r[k] = v;
  r["request_rate"] = std::isinf(info.request_rate) ? json("inf") : json(info.request_rate);
  r["burstiness"] = info.burstiness;
  r["max_concurrency"] = info.max_concurrency > 0 ? json(info.max_concurrency) : json(nullptr);
  r["duration"] = duration_s;
  r["completed"] = m.completed;
  r["failed"] = m.failed;
  r["total_input_tokens"] = m.total_input;
  r["total_output_tokens"] = m.total_output;
  r["request_throughput"] = m.request_throughput;
  r["request_goodput"] = info.goodput.empty() ? json(nullptr) : json(m.request_goodput);
  r["output_throughput"] = m.output_throughput;
  r["total_token_throughput"] = m.total_token_throughput;
  json input_lens = json::array(), ttfts = json::array(), itls = json::array(),
       latencies = json::array(), start_times = json::array(), queue_times = json::array(),
       texts = json::array(), errors = json::array();
  for (const auto& o : outputs) {
    input_lens.push_back(o.prompt_len);
    ttfts.push_back(o.ttft);
    itls.push_back(o.itl);
    latencies.push_back(o.latency);
    start_times.push_back(o.start_time);
    queue_times.push_back(o.queue_time);
    texts.push_back(o.generated_text);
    errors.push_back(o.error);
  }
  r["input_lens"] = std::move(input_lens);
  r["output_lens"] = m.actual_output_lens;
  r["ttfts"] = std::move(ttfts);
  r["itls"] = std::move(itls);
  r["latencies"] = std::move(latencies);
  r["start_times"] = std::move(start_times);
  r["queue_times"] = std::move(queue_times);
  r["generated_texts"] = std::move(texts);
  r["errors"] = std::move(errors);
  r["max_output_tokens_per_s"] = m.max_output_tokens_per_s;
  r["max_concurrent_requests"] = m.max_concurrent_requests;
  r["rtfx"] = 0.0;
  for (const MetricDesc& d : kMetrics) {
    if (!Selected(info, d.key)) continue;
    auto s = SummaryFor(info, m, outputs, d.key);
    if (!s) continue;
    r[absl::StrCat("mean_", d.key, "_ms")] = s->mean_ms;
    r[absl::StrCat("median_", d.key, "_ms")] = s->median_ms;
    r[absl::StrCat("std_", d.key, "_ms")] = s->std_ms;
    for (const auto& [p, v] : s->percentiles_ms) {
      r[absl::StrCat("p", PercentileWord(p), "_", d.key, "_ms")] = v;
    }
  }
  return r;
}

std::string DefaultResultFilename(const RunInfo& info) {
  std::string base_model = info.model_id.substr(info.model_id.rfind('/') + 1);
  std::string conc =
      info.max_concurrency > 0 ? absl::StrCat("-concurrency", info.max_concurrency) : "";
  return absl::StrCat(info.label.value_or(info.backend), "-", PyFloat(info.request_rate), "qps",
                      conc, "-", base_model, "-", info.date, ".json");
}

}  // namespace kvasir::bench

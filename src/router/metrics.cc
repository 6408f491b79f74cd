#include "router/metrics.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kvasir {

void Histogram::Observe(double v) {
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  ++counts_[i];
  sum_ += v;
  ++count_;
}

void Histogram::Render(const std::string& name, const std::string& labels, std::string* out) const {
  uint64_t cum = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    cum += counts_[i];
    std::string le = i < bounds_.size() ? absl::StrFormat("%g", bounds_[i]) : "+Inf";
    absl::StrAppend(out, name, "_bucket{", labels, ",le=\"", le, "\"} ", cum, "\n");
  }
  absl::StrAppend(out, name, "_sum{", labels, "} ", absl::StrFormat("%.6f", sum_), "\n");
  absl::StrAppend(out, name, "_count{", labels, "} ", count_, "\n");
}

RouterMetrics::RouterMetrics()
    : ttft_({0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}),
      tpot_({0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5}),
      e2e_({0.01, 0.05, 0.1, 0.3, 0.5, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60}) {}

void RouterMetrics::RequestFinished(const std::string& reason, int32_t prompt_tokens,
                                    int32_t generation_tokens, double ttft_s, double e2e_s,
                                    double tpot_s) {
  absl::MutexLock lock(&mu_);
  prompt_tokens_ += prompt_tokens;
  generation_tokens_ += generation_tokens;
  if (reason == "stop") {
    ++success_stop_;
  } else if (reason == "length") {
    ++success_length_;
  } else if (reason == "abort") {
    ++aborted_;
  } else {
    ++errored_;
  }
  if (generation_tokens > 0) ttft_.Observe(ttft_s);
  if (generation_tokens > 1) tpot_.Observe(tpot_s);
  e2e_.Observe(e2e_s);
}

void RouterMetrics::RequestRejected() {
  absl::MutexLock lock(&mu_);
  ++rejected_;
}

std::string RouterMetrics::Render(const std::string& model, const Gauges& g) const {
  absl::MutexLock lock(&mu_);
  const std::string l = absl::StrCat("model_name=\"", model, "\"");
  std::string o;
  auto gauge = [&](const char* name, const char* help, const std::string& v) {
    absl::StrAppend(&o, "# HELP ", name, " ", help, "\n# TYPE ", name, " gauge\n", name, "{", l,
                    "} ", v, "\n");
  };
  auto counter = [&](const char* name, const char* help, uint64_t v) {
    absl::StrAppend(&o, "# HELP ", name, " ", help, "\n# TYPE ", name, " counter\n", name, "{", l,
                    "} ", v, "\n");
  };
  gauge("kvasir:num_requests_running", "Requests in the running batch.", absl::StrCat(g.running));
  gauge("kvasir:num_requests_waiting", "Requests waiting to be admitted.", absl::StrCat(g.waiting));
  gauge("kvasir:kv_cache_usage_perc", "Fraction of KV blocks in use (1 = full).",
        absl::StrFormat("%.6f", g.kv_blocks_total ? double(g.kv_blocks_used) / g.kv_blocks_total : 0.0));
  gauge("kvasir:kv_cache_blocks_used", "KV blocks in use.", absl::StrCat(g.kv_blocks_used));
  gauge("kvasir:kv_cache_blocks_total", "KV blocks in the pool.", absl::StrCat(g.kv_blocks_total));
  counter("kvasir:num_preemptions_total", "Sequences preempted (KV freed, recomputed later).",
          static_cast<uint64_t>(g.preemptions));
  counter("kvasir:kv_evicted_blocks_total",
          "KV blocks returned to the pool by head-aware eviction (kv_policy).",
          static_cast<uint64_t>(g.kv_evicted_blocks));
  counter("kvasir:prefix_cache_queries_total",
          "Prompt tokens looked up in the prefix cache (admitted requests).",
          static_cast<uint64_t>(g.prefix_queries_tokens));
  counter("kvasir:prefix_cache_hits_total", "Of those, tokens whose KV was found cached.",
          static_cast<uint64_t>(g.prefix_hit_tokens));
  counter("kvasir:prompt_tokens_total", "Prefill tokens processed.", prompt_tokens_);
  counter("kvasir:generation_tokens_total", "Generated tokens.", generation_tokens_);
  absl::StrAppend(&o, "# HELP kvasir:request_success_total Finished requests by reason.\n",
                  "# TYPE kvasir:request_success_total counter\n");
  absl::StrAppend(&o, "kvasir:request_success_total{", l, ",finished_reason=\"stop\"} ", success_stop_, "\n");
  absl::StrAppend(&o, "kvasir:request_success_total{", l, ",finished_reason=\"length\"} ", success_length_, "\n");
  absl::StrAppend(&o, "kvasir:request_success_total{", l, ",finished_reason=\"abort\"} ", aborted_, "\n");
  counter("kvasir:request_failure_total", "Requests that ended in an engine error.", errored_);
  counter("kvasir:request_rejected_total", "Requests refused (queue full, too long, bad).", rejected_);
  absl::StrAppend(&o, "# HELP kvasir:time_to_first_token_seconds Time to first token.\n",
                  "# TYPE kvasir:time_to_first_token_seconds histogram\n");
  ttft_.Render("kvasir:time_to_first_token_seconds", l, &o);
  absl::StrAppend(&o, "# HELP kvasir:time_per_output_token_seconds Mean time per output token after the first.\n",
                  "# TYPE kvasir:time_per_output_token_seconds histogram\n");
  tpot_.Render("kvasir:time_per_output_token_seconds", l, &o);
  absl::StrAppend(&o, "# HELP kvasir:e2e_request_latency_seconds End-to-end request latency.\n",
                  "# TYPE kvasir:e2e_request_latency_seconds histogram\n");
  e2e_.Render("kvasir:e2e_request_latency_seconds", l, &o);
  return o;
}

}  // namespace kvasir

// Prometheus metrics of the router, named as vLLM's with a `kvasir:` prefix.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace kvasir {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1) {}
  void Observe(double v);
  // Appends `name_bucket{le=..}`, `name_sum`, `name_count` lines.
  void Render(const std::string& name, const std::string& labels, std::string* out) const;

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket (not cumulative); last is +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

struct Gauges {
  int64_t running = 0, waiting = 0, kv_blocks_total = 0, kv_blocks_used = 0;
  int64_t preemptions = 0;  // total since start (a counter)
  int64_t kv_evicted_blocks = 0;  // total since start (a counter)
  int64_t prefix_queries_tokens = 0, prefix_hit_tokens = 0;  // prefix caching, counters
};

class RouterMetrics {
 public:
  RouterMetrics();
  void RequestFinished(const std::string& finish_reason, int32_t prompt_tokens,
                       int32_t generation_tokens, double ttft_s, double e2e_s, double tpot_s);
  void RequestRejected();
  std::string Render(const std::string& model, const Gauges& g) const;

 private:
  mutable absl::Mutex mu_;
  uint64_t prompt_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t generation_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t success_stop_ ABSL_GUARDED_BY(mu_) = 0, success_length_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t aborted_ ABSL_GUARDED_BY(mu_) = 0, errored_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t rejected_ ABSL_GUARDED_BY(mu_) = 0;
  Histogram ttft_ ABSL_GUARDED_BY(mu_);
  Histogram tpot_ ABSL_GUARDED_BY(mu_);
  Histogram e2e_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvasir

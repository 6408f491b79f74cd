// Placement: which decoder worker takes a new request. The router keeps one WorkerLoad per
// worker (updated from its own bookkeeping and worker health reports) and asks a
// PlacementPolicy for each admitted request. Policies are pluggable by name
// (MakePlacementPolicy) and deterministic given their random source.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/random/bit_gen_ref.h"
#include "common/status.h"

namespace kvasir::sched {

struct WorkerLoad {
  bool healthy = true;
  int64_t outstanding_tokens = 0;  // prompt + max_new_tokens of requests not yet finished
  int32_t outstanding_requests = 0;
};

struct PlacementRequest {
  int64_t prompt_tokens = 0;
  int64_t max_new_tokens = 0;
};

class PlacementPolicy {
 public:
  virtual ~PlacementPolicy() = default;
  // Index of the chosen worker in `workers`; Unavailable when no worker is healthy.
  virtual absl::StatusOr<size_t> Pick(const std::vector<WorkerLoad>& workers,
                                      const PlacementRequest& request) = 0;
  virtual std::string_view name() const = 0;
};

// Healthy workers in turn, skipping unhealthy ones.
class RoundRobinPlacement : public PlacementPolicy {
 public:
  absl::StatusOr<size_t> Pick(const std::vector<WorkerLoad>& workers,
                              const PlacementRequest& request) override;
  std::string_view name() const override { return "round_robin"; }

 private:
  size_t next_ = 0;
};

enum class LoadMetric {
  kTokens,    // fewest outstanding tokens, then fewest requests
  kRequests,  // fewest outstanding requests, then fewest tokens
};

// The healthy worker with the least load. Ties go to a uniformly random one among the tied
// when a random source is given, otherwise round-robin over the tied ones.
class LeastLoadedPlacement : public PlacementPolicy {
 public:
  explicit LeastLoadedPlacement(LoadMetric metric = LoadMetric::kTokens) : metric_(metric) {}
  // `gen` must outlive the policy.
  LeastLoadedPlacement(LoadMetric metric, absl::BitGenRef gen) : metric_(metric), gen_(gen) {}

  absl::StatusOr<size_t> Pick(const std::vector<WorkerLoad>& workers,
                              const PlacementRequest& request) override;
  std::string_view name() const override { return "least_loaded"; }

 private:
  LoadMetric metric_;
  std::optional<absl::BitGenRef> gen_;
  size_t rr_ = 0;  // round-robin cursor for ties
};

// "round_robin", "least_loaded" (tokens) or "least_requests". Without gen, ties are broken
// round-robin; gen must outlive the policy.
absl::StatusOr<std::unique_ptr<PlacementPolicy>> MakePlacementPolicy(
    std::string_view name, std::optional<absl::BitGenRef> gen = std::nullopt);

}  // namespace kvasir::sched

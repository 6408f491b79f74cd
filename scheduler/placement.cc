#include "scheduler/placement.h"

#include <random>
#include <tuple>

namespace kvasir::sched {

namespace {

absl::Status NoHealthyWorker(size_t n) {
  return absl::UnavailableError(absl::StrCat("no healthy decoder worker (", n, " known)"));
}

}  // namespace

absl::StatusOr<size_t> RoundRobinPlacement::Pick(const std::vector<WorkerLoad>& workers,
                                                 const PlacementRequest& request) {
  const size_t n = workers.size();
  for (size_t i = 0; i < n; ++i) {
    const size_t w = (next_ + i) % n;
    if (workers[w].healthy) {
      next_ = w + 1;
      return w;
    }
  }
  return NoHealthyWorker(n);
}

absl::StatusOr<size_t> LeastLoadedPlacement::Pick(const std::vector<WorkerLoad>& workers,
                                                  const PlacementRequest& request) {
  auto load = [&](const WorkerLoad& w) {
    return metric_ == LoadMetric::kTokens
               ? std::make_tuple(w.outstanding_tokens, int64_t{w.outstanding_requests})
               : std::make_tuple(int64_t{w.outstanding_requests}, w.outstanding_tokens);
  };
  std::vector<size_t> best;
  for (size_t i = 0; i < workers.size(); ++i) {
    if (!workers[i].healthy) continue;
    if (best.empty() || load(workers[i]) < load(workers[best[0]])) {
      best.assign(1, i);
    } else if (load(workers[i]) == load(workers[best[0]])) {
      best.push_back(i);
    }
  }
  if (best.empty()) return NoHealthyWorker(workers.size());
  if (best.size() == 1) return best[0];
  if (gen_) {
    std::uniform_int_distribution<size_t> pick(0, best.size() - 1);
    return best[pick(*gen_)];
  }
  return best[rr_++ % best.size()];
}

absl::StatusOr<std::unique_ptr<PlacementPolicy>> MakePlacementPolicy(
    std::string_view name, std::optional<absl::BitGenRef> gen) {
  if (name == "round_robin") return std::make_unique<RoundRobinPlacement>();
  if (name == "least_loaded" || name == "least_requests") {
    const LoadMetric m = name == "least_loaded" ? LoadMetric::kTokens : LoadMetric::kRequests;
    if (gen) return std::make_unique<LeastLoadedPlacement>(m, *gen);
    return std::make_unique<LeastLoadedPlacement>(m);
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown placement policy '", std::string(name),
                                                 "' (round_robin, least_loaded, least_requests)"));
}

}  // namespace kvasir::sched

// The batch scheduler's view of the KV (sched::KvBudget) over wherever the runner's attention
// executor keeps it (KvCapacity): the engine's, and the KV manager's simulation test's.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <unordered_map>
#include <utility>
#include <vector>

#include "attention/attention_executor.h"
#include "scheduler/kv_budget.h"

namespace kvasir {

class ExecutorBudget : public sched::KvBudget {
 public:
  // The token stream of a sequence for prefix caching; empty: do not share its KV (a
  // compressing kv_policy rewrites it).
  using StreamFn = std::function<std::span<const int32_t>(int64_t seq_id)>;
  explicit ExecutorBudget(KvCapacity* a, StreamFn stream = nullptr)
      : a_(a), stream_(std::move(stream)) {}
  int32_t AdoptCachedPrefix(int64_t seq_id) override {
    if (!stream_) return 0;
    std::span<const int32_t> t = stream_(seq_id);
    return t.empty() ? 0 : a_->AdoptPrefix(seq_id, t);
  }
  int64_t BlocksNeeded(int64_t seq_id, int32_t n) const override {
    return a_->BlocksNeeded(seq_id, n);
  }
  int64_t BlocksForTokens(int64_t n) const override { return a_->BlocksForTokens(n); }
  int64_t NumFreeBlocks() const override {
    const KvUsage u = a_->Usage();
    return u.blocks_total - u.blocks_used;
  }
  int64_t NumTotalBlocks() const override { return a_->Usage().blocks_total; }
  absl::Status Allocate(int64_t seq_id, int32_t n) override {
    absl::Status s = a_->Grow(seq_id, n);
    if (absl::IsAborted(s)) {
      // Its KV was lost with an attention worker: not this step; the engine recomputes it.
      lost_.push_back(seq_id);
      return absl::ResourceExhaustedError(s.message());
    }
    // "No room now" is the scheduler's business; anything else ends the request.
    if (!s.ok() && !absl::IsResourceExhausted(s)) failed_.emplace(seq_id, s);
    return s;
  }
  void Free(int64_t seq_id) override { a_->Release(seq_id); }
  bool shared() const override { return a_->shared(); }
  // Sequences whose growth failed for a reason other than "no room now", since the last call.
  std::unordered_map<int64_t, absl::Status> TakeFailures() { return std::move(failed_); }
  // Sequences whose KV was lost (Grow said Aborted), since the last call.
  std::vector<int64_t> TakeLost() { return std::exchange(lost_, {}); }

 private:
  KvCapacity* a_;
  StreamFn stream_;
  std::unordered_map<int64_t, absl::Status> failed_;
  std::vector<int64_t> lost_;
};

}  // namespace kvasir

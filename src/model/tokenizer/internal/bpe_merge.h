// Greedy BPE merging shared by the tokenizers: over a sequence of token ids, repeatedly merge
// the adjacent pair with the best priority (smallest; leftmost on ties) until no pair merges.
// llama2.c ranks merges by vocabulary score (priority = -score), HF BPE by merge rank. A linked
// list over the symbols and a heap of candidate pairs (stale ones skipped) make it
// O(n log n) instead of the O(n^2) rescan.
#pragma once

#include <cstdint>
#include <optional>
#include <queue>
#include <utility>
#include <vector>

namespace kvasir::tokenizer_internal {

// lookup(left_id, right_id) -> std::optional<std::pair<Priority, int32_t merged_id>>.
template <typename Priority, typename Lookup>
void MergePairs(std::vector<int32_t>& ids, const Lookup& lookup) {
  const int32_t n = static_cast<int32_t>(ids.size());
  if (n < 2) return;
  std::vector<int32_t> prev(n), next(n);
  for (int32_t i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  struct Candidate {
    Priority priority;
    int32_t left, left_id, right_id, merged;
    bool operator<(const Candidate& o) const {  // std::priority_queue keeps the largest on top
      if (priority != o.priority) return priority > o.priority;
      return left > o.left;
    }
  };
  std::priority_queue<Candidate> heap;
  auto consider = [&](int32_t left) {
    if (left < 0 || next[left] < 0) return;
    const int32_t a = ids[left], b = ids[next[left]];
    if (std::optional<std::pair<Priority, int32_t>> m = lookup(a, b)) {
      heap.push({m->first, left, a, b, m->second});
    }
  };
  for (int32_t i = 0; i + 1 < n; ++i) consider(i);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    if (ids[c.left] != c.left_id || next[c.left] < 0 || ids[next[c.left]] != c.right_id) {
      continue;  // stale: one side was merged since
    }
    const int32_t right = next[c.left];
    ids[c.left] = c.merged;
    next[c.left] = next[right];
    if (next[c.left] >= 0) prev[next[c.left]] = c.left;
    ids[right] = -1;  // dead
    consider(prev[c.left]);
    consider(c.left);
  }
  std::vector<int32_t> out;
  out.reserve(n);
  for (int32_t i = 0; i >= 0; i = next[i]) out.push_back(ids[i]);
  ids.swap(out);
}

}  // namespace kvasir::tokenizer_internal

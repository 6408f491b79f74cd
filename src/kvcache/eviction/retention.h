// Per-layer KV retention decisions from the observation window (Task-KV and its baselines;
// kv_policy.h says what each policy keeps).
//
// Observe: the last `window` prompt queries of one layer attend (causally, full KV) over the
// prompt; per KV head that gives each token's attention mass summed over the window's queries
// and the GQA group's query heads (the group's scores pooled), and the head's semantic vector,
// the mean attention output (attention-weighted sum of V) over the same queries and heads.
// Plan: which prompt tokens each KV head keeps, and how it keeps its budget while decoding.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "kvcache/eviction/kv_policy.h"

namespace kvasir {

struct HeadObservation {
  std::vector<float> scores;    // [prompt_len] attention mass per token
  std::vector<float> semantic;  // [head_dim]
};

// Reads row t of (kv_head) as fp32 K and V, head_dim each.
using KvRowReader = std::function<void(int32_t kv_head, int32_t t, float* k, float* v)>;

// q: the window's query rows, positions [prompt_len - w, prompt_len) with
// w = min(window, prompt_len), each [num_heads * head_dim] (GQA: query head h uses kv head
// h / (num_heads / num_kv_heads)), row stride q_stride; RoPE applied. scale: the softmax scale.
std::vector<HeadObservation> ObserveLayer(int32_t num_heads, int32_t num_kv_heads,
                                          int32_t head_dim, int32_t prompt_len, int32_t window,
                                          const float* q, int64_t q_stride, float scale,
                                          const KvRowReader& rows);

// Average pooling with an odd kernel; the window is clipped at the ends (mean of what exists).
std::vector<float> AvgPool(std::span<const float> x, int32_t kernel);

// The indices of the k largest x[i] with i in [begin, end) (ties: lower index first), ascending.
std::vector<int32_t> TopKInRange(std::span<const float> x, int32_t begin, int32_t end, int32_t k);

// Task-KV's separator: the `count` heads whose semantic vector is farthest (cosine distance)
// from the mean of all heads' (ties: lower head first). Returns [num_heads] flags.
std::vector<bool> HeterogeneousHeads(std::span<const HeadObservation> heads, int32_t count);

struct HeadRetention {
  std::vector<int32_t> keep;  // prompt token indices kept, ascending
  // While decoding: the first `pinned` kept entries (sinks, chosen middle tokens) stay; the
  // entries after them form a window that slides: once the table holds cap + block_size
  // entries, block_size of the oldest unpinned ones go. cap < 0: the head keeps everything.
  int32_t pinned = 0;
  int32_t cap = -1;
  bool heterogeneous = false;  // taskkv's separator chose it
};

// What every KV head of one layer keeps of a prompt of n tokens. `obs` is ObserveLayer's
// output (may be empty for policies that do not score: full, streaming). A policy that does
// not compress the prompt keeps every token of every head with cap -1.
std::vector<HeadRetention> PlanLayerRetention(const KvPolicy& policy, int32_t num_kv_heads,
                                              int32_t prompt_len,
                                              std::span<const HeadObservation> obs);

}  // namespace kvasir

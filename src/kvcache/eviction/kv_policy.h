// Which KV a request keeps after its prompt (head-aware eviction, Task-KV, arXiv 2501.15113),
// and its budget. The policy is per request (OpenAI body `kv_policy` / `kv_budget`, server
// defaults `--kv-policy` / `--kv-budget`); retention.h turns it into per-head decisions.
//
// Budget: the average number of prompt tokens each (layer, KV head) table keeps, given as a
// fraction of the prompt (budget_fraction) or a token count (budget_tokens > 0). A layer's
// total is budget × num_kv_heads; policies differ in how they spend it:
//   full       everything (the budget is ignored)
//   streaming  StreamingLLM: every head keeps `sink` first tokens and the most recent ones
//   snapkv     SnapKV: every head keeps the observation window and its own top tokens by pooled
//              attention score, the same count per head
//   adakv      Ada-KV: the window per head, then the layer's top tokens across all heads at
//              once (heads that attend sharply get more)
//   taskkv     Task-KV: the heads whose semantic vector lies farthest from the layer's center
//              (a fraction `beta` of them) get `hetero_share` times the average budget (the
//              paper keeps them whole: a share >= 1/budget); the others keep sinks and a recent
//              window each, and their top "middle" tokens by pooled score chosen across all
//              of them at once with what is left
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "common/status.h"

namespace kvasir {

enum class KvPolicyKind { kFull, kTaskKv, kStreaming, kSnapKv, kAdaKv };

std::string_view KvPolicyName(KvPolicyKind k);
// "full", "taskkv", "streaming", "snapkv", "adakv"; InvalidArgument otherwise.
absl::StatusOr<KvPolicyKind> ParseKvPolicyKind(std::string_view s);

struct KvPolicy {
  KvPolicyKind kind = KvPolicyKind::kFull;
  double budget_fraction = 1.0;  // of the prompt, in (0, 1]; >= 1 keeps everything
  int32_t budget_tokens = 0;     // > 0: a token count instead of the fraction
  int32_t sink = 16;             // first tokens every compressed head keeps (taskkv, streaming)
  int32_t recent = 256;          // most recent tokens every compressed head keeps (taskkv)
  int32_t window = 32;           // observation window: the last prompt queries that score
  int32_t pooling = 7;           // odd kernel of the average pooling over scores
  double beta = 0.3;             // taskkv: fraction of heads that are heterogeneous
  // taskkv: a heterogeneous head's budget as a multiple of the layer's average (at most the
  // prompt). 1.25 measured best on tinyrecall (README); keeping them whole starves the rest
  // of a 4-KV-head layer (one head whole is 25% of the layer's KV already).
  double hetero_share = 1.25;

  // Average tokens per (layer, KV head) for a prompt of n tokens (at least 1).
  int32_t BudgetFor(int32_t prompt_len) const;
  // Whether a prompt of n tokens loses anything under this policy.
  bool Compresses(int32_t prompt_len) const {
    return kind != KvPolicyKind::kFull && BudgetFor(prompt_len) < prompt_len;
  }
  // Whether the policy scores the prompt (everything but full and streaming).
  bool NeedsScores() const {
    return kind == KvPolicyKind::kTaskKv || kind == KvPolicyKind::kSnapKv ||
           kind == KvPolicyKind::kAdaKv;
  }
};

// Ranges of every field; InvalidArgument naming the field.
absl::Status ValidateKvPolicy(const KvPolicy& p);

// `kv_budget` as the API takes it: a number in (0, 1] is a fraction of the prompt, an integer
// > 1 a token count. Sets budget_fraction / budget_tokens of *p.
absl::Status SetKvBudget(double value, KvPolicy* p);

// The budget a policy named without one gets (Task-KV's 40%).
inline constexpr double kDefaultKvBudget = 0.4;

// A request's (or the command line's) kv_policy / kv_budget over the defaults: a policy named
// without a budget keeps the defaults' budget when they compress, else kDefaultKvBudget; a budget
// alone is spent the defaults' way, or Task-KV's when they are full. nullopt when neither the
// defaults nor the fields are set. Validated (InvalidArgument).
absl::StatusOr<std::optional<KvPolicy>> ResolveKvPolicy(const std::optional<KvPolicy>& defaults,
                                                        std::optional<KvPolicyKind> kind,
                                                        std::optional<double> budget);

}  // namespace kvasir

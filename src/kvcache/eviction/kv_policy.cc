#include "kvcache/eviction/kv_policy.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"

namespace kvasir {

std::string_view KvPolicyName(KvPolicyKind k) {
  switch (k) {
    case KvPolicyKind::kFull: return "full";
    case KvPolicyKind::kTaskKv: return "taskkv";
    case KvPolicyKind::kStreaming: return "streaming";
    case KvPolicyKind::kSnapKv: return "snapkv";
    case KvPolicyKind::kAdaKv: return "adakv";
  }
  return "?";
}

absl::StatusOr<KvPolicyKind> ParseKvPolicyKind(std::string_view s) {
  for (KvPolicyKind k : {KvPolicyKind::kFull, KvPolicyKind::kTaskKv, KvPolicyKind::kStreaming,
                         KvPolicyKind::kSnapKv, KvPolicyKind::kAdaKv}) {
    if (s == KvPolicyName(k)) return k;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "kv_policy must be one of full, taskkv, streaming, snapkv, adakv (got '", std::string(s),
      "')"));
}

int32_t KvPolicy::BudgetFor(int32_t prompt_len) const {
  if (kind == KvPolicyKind::kFull) return prompt_len;
  int64_t b = budget_tokens > 0
                  ? budget_tokens
                  : static_cast<int64_t>(std::ceil(budget_fraction * prompt_len - 1e-9));
  return static_cast<int32_t>(std::clamp<int64_t>(b, 1, std::max(prompt_len, 1)));
}

absl::Status ValidateKvPolicy(const KvPolicy& p) {
  if (!(p.budget_fraction > 0.0) || !std::isfinite(p.budget_fraction)) {
    return absl::InvalidArgumentError("kv_budget must be a fraction in (0, 1] or a token count");
  }
  if (p.budget_tokens < 0) return absl::InvalidArgumentError("kv_budget must be positive");
  if (p.sink < 0 || p.sink > 1 << 20) return absl::InvalidArgumentError("kv sink tokens out of range");
  if (p.recent < 0 || p.recent > 1 << 24) {
    return absl::InvalidArgumentError("kv recent window out of range");
  }
  if (p.window < 1 || p.window > 4096) {
    return absl::InvalidArgumentError("kv observation window must be in [1, 4096]");
  }
  if (p.pooling < 1 || p.pooling > 255 || p.pooling % 2 == 0) {
    return absl::InvalidArgumentError("kv pooling kernel must be odd, in [1, 255]");
  }
  if (!(p.beta >= 0.0 && p.beta <= 1.0)) {
    return absl::InvalidArgumentError("kv beta (heterogeneous head fraction) must be in [0, 1]");
  }
  if (!(p.hetero_share >= 1.0 && p.hetero_share <= 1e6)) {
    return absl::InvalidArgumentError("kv hetero_share must be in [1, 1e6]");
  }
  return absl::OkStatus();
}

absl::Status SetKvBudget(double value, KvPolicy* p) {
  if (!std::isfinite(value) || value <= 0.0) {
    return absl::InvalidArgumentError(
        "kv_budget must be a fraction in (0, 1] of the prompt or a token count > 1");
  }
  if (value <= 1.0) {
    p->budget_fraction = value;
    p->budget_tokens = 0;
    return absl::OkStatus();
  }
  if (value != std::floor(value) || value > 1e9) {
    return absl::InvalidArgumentError(
        "kv_budget above 1 is a token count and must be an integer (at most 1e9)");
  }
  p->budget_tokens = static_cast<int32_t>(value);
  return absl::OkStatus();
}

absl::StatusOr<std::optional<KvPolicy>> ResolveKvPolicy(const std::optional<KvPolicy>& defaults,
                                                        std::optional<KvPolicyKind> kind,
                                                        std::optional<double> budget) {
  if (!defaults && !kind && !budget) return std::optional<KvPolicy>();
  KvPolicy p = defaults.value_or(KvPolicy{});
  const bool defaults_compress = defaults && defaults->kind != KvPolicyKind::kFull;
  if (kind) {
    p.kind = *kind;
    if (!defaults_compress) {
      p.budget_fraction = kDefaultKvBudget;
      p.budget_tokens = 0;
    }
  } else if (budget && p.kind == KvPolicyKind::kFull) {
    p.kind = KvPolicyKind::kTaskKv;
  }
  if (budget) RETURN_IF_ERROR(SetKvBudget(*budget, &p));
  RETURN_IF_ERROR(ValidateKvPolicy(p));
  return std::optional<KvPolicy>(p);
}

}  // namespace kvasir

// Test-only helpers shared by sampling_ref_test.cc (CPU) and sampling_test.cc (GPU): the
// filtered distribution computed independently in double (none of sampling_common.h's
// fixed-point arithmetic), random rows, and a goodness-of-fit check. Header-only, no CUDA.
#pragma once

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "kernels/sampling/sampling_common.h"

namespace kvasir::sampling_test {

inline double SanitizedDouble(float x) {
  if (std::isnan(x)) return -INFINITY;
  if (x == INFINITY) return FLT_MAX;
  return x;
}

// First index of the largest sanitized logit.
inline int32_t ArgmaxDouble(std::span<const float> logits) {
  int32_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i) {
    if (SanitizedDouble(logits[i]) > SanitizedDouble(logits[best])) best = static_cast<int32_t>(i);
  }
  return best;
}

// log-softmax of token under the sanitized raw logits; -inf when every logit is -inf.
inline double LogSoftmaxDouble(std::span<const float> logits, int32_t token) {
  double max = -INFINITY;
  for (float x : logits) max = std::max(max, SanitizedDouble(x));
  if (max == -INFINITY) return -INFINITY;
  double sum = 0.0;
  for (float x : logits) sum += std::exp(SanitizedDouble(x) - max);
  return SanitizedDouble(logits[token]) - max - std::log(sum);
}

struct Filtered {
  bool greedy = false;
  std::vector<double> p;  // [vocab] normalized; 0 outside the kept set
  // How close the row is to a filter boundary (relative to the mass / to min_p): below ~1e-4 a
  // rounding difference may legitimately move a token across it.
  double margin = INFINITY;
};

// temperature -> top-k -> top-p (mass of the top-k set, Sampler's 1e-6 tolerance) -> min-p,
// over the order (logit descending, id ascending), in double.
inline Filtered FilteredDouble(std::span<const float> logits, const cuda::SampleRowParams& params) {
  Filtered out;
  const size_t n = logits.size();
  std::vector<double> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = SanitizedDouble(logits[i]);
  const double max = *std::max_element(v.begin(), v.end());
  if (!(params.temperature >= 1e-5f) || max == -INFINITY) {
    out.greedy = true;
    return out;
  }
  std::vector<double> e(n);
  for (size_t i = 0; i < n; ++i) e[i] = std::exp((v[i] - max) / params.temperature);
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&v](size_t a, size_t b) { return v[a] > v[b]; });
  size_t keep = n;
  if (params.top_k > 0 && static_cast<size_t>(params.top_k) < n) keep = params.top_k;
  if (params.top_p < 1.0f) {
    double mass = 0.0;
    for (size_t j = 0; j < keep; ++j) mass += e[order[j]];
    const double target = (static_cast<double>(params.top_p) - 1e-6) * mass;
    double cum = 0.0;
    size_t cut = keep;
    for (size_t j = 0; j < keep; ++j) {
      cum += e[order[j]];
      out.margin = std::min(out.margin, std::abs(cum - target) / mass);
      if (cum >= target && cut == keep) cut = j + 1;
    }
    keep = std::max<size_t>(cut, 1);
  }
  double min_p = params.min_p > 0.0f ? std::min(1.0, static_cast<double>(params.min_p)) : 0.0;
  out.p.assign(n, 0.0);
  double total = 0.0;
  for (size_t j = 0; j < keep; ++j) {
    const size_t i = order[j];
    if (min_p > 0.0) out.margin = std::min(out.margin, std::abs(e[i] - min_p) / min_p);
    if (e[i] >= min_p) {
      out.p[i] = e[i];
      total += e[i];
    }
  }
  for (double& x : out.p) x /= total;
  return out;
}

// Goodness of fit of counts (n draws in all) to p. Cells expected fewer than 10 times are pooled
// into one cell (the chi-square approximation needs large expected counts). Passes when
// X^2 <= df + 10 sqrt(2 df) + 10, df = cells - 1: above the 1 - 1e-6 quantile of chi-square for
// every df from 1 to 1000 (df = 1: 25.1 vs 23.9; df = 10: 64.7 vs 48.0; df = 50: 170 vs 109), so
// a correct sampler fails it about once in a million runs, while a token probability off by a
// few percent of a well-populated cell fails it reliably at n = 20000. Tokens with p = 0 must
// never be drawn. Returns "" on success, else a description.
inline std::string CheckFrequencies(const std::vector<int64_t>& counts,
                                    const std::vector<double>& p, int64_t n) {
  double pooled_expected = 0.0, pooled_observed = 0.0, x2 = 0.0;
  int cells = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] == 0.0) {
      if (counts[i] != 0) return "token " + std::to_string(i) + " is outside the kept set";
      continue;
    }
    const double expected = p[i] * n;
    if (expected < 10.0) {
      pooled_expected += expected;
      pooled_observed += counts[i];
      continue;
    }
    const double d = counts[i] - expected;
    x2 += d * d / expected;
    ++cells;
  }
  if (pooled_expected > 0.0) {
    const double d = pooled_observed - pooled_expected;
    x2 += d * d / pooled_expected;
    ++cells;
  }
  const int df = std::max(cells - 1, 1);
  const double bound = df + 10.0 * std::sqrt(2.0 * df) + 10.0;
  if (x2 > bound) {
    return "chi-square " + std::to_string(x2) + " > " + std::to_string(bound) + " (df " +
           std::to_string(df) + ")";
  }
  return "";
}

// Row generators: shapes that matter to the kernel's passes.
enum class RowKind {
  kNormal,    // N(0, sigma^2), sigma in {0.5, 2, 5}
  kIntegers,  // integers in [-3, 3]: many ties
  kConstant,  // all equal
  kDominant,  // one token far above the rest
  kSpecials,  // normal with NaN, -inf, +inf and signed zeros sprinkled in
  kNarrow,    // 10 + 1e-3 * U(0, 1): many tokens in one search bin
  kZeros,     // values from {-0, +0, 1}: -0 and +0 must tie
  kCount
};

inline std::vector<float> RandomRow(RowKind kind, size_t n, std::mt19937_64& rng) {
  std::vector<float> row(n);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  switch (kind) {
    case RowKind::kNormal: {
      const float sigmas[] = {0.5f, 2.0f, 5.0f};
      std::normal_distribution<float> nd(0.0f, sigmas[rng() % 3]);
      for (float& x : row) x = nd(rng);
      break;
    }
    case RowKind::kIntegers:
      for (float& x : row) x = static_cast<float>(static_cast<int>(rng() % 7) - 3);
      break;
    case RowKind::kConstant: {
      const float c = u(rng) * 4.0f - 2.0f;
      for (float& x : row) x = c;
      break;
    }
    case RowKind::kDominant: {
      std::normal_distribution<float> nd(0.0f, 1.0f);
      for (float& x : row) x = nd(rng);
      row[rng() % n] = 30.0f;
      break;
    }
    case RowKind::kSpecials: {
      std::normal_distribution<float> nd(0.0f, 2.0f);
      for (float& x : row) {
        const uint64_t r = rng() % 200;
        if (r == 0) {
          x = NAN;
        } else if (r == 1) {
          x = -INFINITY;
        } else if (r == 2) {
          x = -0.0f;
        } else if (r == 3) {
          x = 0.0f;
        } else {
          x = nd(rng);
        }
      }
      if (rng() % 3 == 0) row[rng() % n] = INFINITY;
      if (rng() % 5 == 0) row[rng() % n] = INFINITY;
      break;
    }
    case RowKind::kNarrow:
      for (float& x : row) x = 10.0f + 1e-3f * u(rng);
      break;
    case RowKind::kZeros:
      for (float& x : row) {
        const uint64_t r = rng() % 3;
        x = r == 0 ? -0.0f : (r == 1 ? 0.0f : 1.0f);
      }
      break;
    case RowKind::kCount:
      break;
  }
  return row;
}

// Random per-row parameters covering greedy, each filter alone and together, and the edges.
inline cuda::SampleRowParams RandomParams(int32_t vocab, std::mt19937_64& rng) {
  const float temps[] = {0.0f, 2e-5f, 0.25f, 0.7f, 1.0f, 1.0f, 1.5f, 3.0f, 100.0f};
  const int32_t ks[] = {-1, 0, 1, 2, 5, 50, 1000, vocab - 1, vocab, vocab + 5, -1, -1};
  const float ps[] = {1.0f, 1.0f, 0.999f, 0.95f, 0.9f, 0.5f, 0.1f, 0.0f};
  const float min_ps[] = {0.0f, 0.0f, 0.001f, 0.05f, 0.3f, 1.0f};
  cuda::SampleRowParams p;
  p.temperature = temps[rng() % std::size(temps)];
  p.top_k = ks[rng() % std::size(ks)];
  p.top_p = ps[rng() % std::size(ps)];
  p.min_p = min_ps[rng() % std::size(min_ps)];
  p.seed = rng();
  p.step = rng() % 4 == 0 ? rng() : rng() % 1000;
  return p;
}

}  // namespace kvasir::sampling_test

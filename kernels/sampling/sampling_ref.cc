#include "kernels/sampling/sampling_ref.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace kvasir {
namespace {

using cuda::sampling_internal::DrawBits;
using cuda::sampling_internal::DrawTarget;
using cuda::sampling_internal::FixedWeight;
using cuda::sampling_internal::IsGreedy;
using cuda::sampling_internal::LogWeight;
using cuda::sampling_internal::LogWeightScale;
using cuda::sampling_internal::MinPLogThreshold;
using cuda::sampling_internal::OrderKey;
using cuda::sampling_internal::Sanitize;
using cuda::sampling_internal::TopKActive;
using cuda::sampling_internal::TopPActive;
using cuda::sampling_internal::TopPTarget;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

std::vector<float> SanitizeRow(std::span<const float> logits) {
  std::vector<float> v(logits.size());
  for (size_t i = 0; i < v.size(); ++i) v[i] = Sanitize(logits[i]);
  return v;
}

// First index of the largest value.
size_t Argmax(const std::vector<float>& v) {
  size_t best = 0;
  for (size_t i = 1; i < v.size(); ++i) {
    if (v[i] > v[best]) best = i;
  }
  return best;
}

std::vector<uint64_t> Weights(const std::vector<float>& v, const cuda::SampleRowParams& params) {
  const int32_t vocab = static_cast<int32_t>(v.size());
  const float max = v[Argmax(v)];
  if (IsGreedy(params.temperature) || max == kNegInf) return {};
  const float scale = LogWeightScale(params.temperature);
  std::vector<float> y(vocab);
  std::vector<uint64_t> w(vocab);
  for (int32_t i = 0; i < vocab; ++i) {
    y[i] = LogWeight(v[i], max, scale);
    w[i] = FixedWeight(y[i]);
  }

  // The order every filter cuts a prefix of: logit descending, then id ascending.
  std::vector<int32_t> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&v](int32_t a, int32_t b) {
    const uint32_t ka = OrderKey(v[a]), kb = OrderKey(v[b]);
    return ka > kb || (ka == kb && a < b);
  });

  size_t keep = static_cast<size_t>(vocab);
  if (TopKActive(params.top_k, vocab)) keep = static_cast<size_t>(params.top_k);
  if (TopPActive(params.top_p)) {
    uint64_t topk_mass = 0;
    for (size_t j = 0; j < keep; ++j) topk_mass += w[order[j]];
    const uint64_t target = TopPTarget(params.top_p, topk_mass);
    uint64_t cum = 0;
    for (size_t j = 0; j < keep; ++j) {
      cum += w[order[j]];
      if (cum >= target) {
        keep = j + 1;
        break;
      }
    }
  }
  const float min_y = MinPLogThreshold(params.min_p);
  std::vector<uint64_t> kept(vocab, 0);
  for (size_t j = 0; j < keep; ++j) {
    const int32_t i = order[j];
    if (y[i] >= min_y) kept[i] = w[i];
  }
  return kept;
}

SampleRowResult SampleSanitized(const std::vector<float>& v, const cuda::SampleRowParams& params) {
  const size_t argmax = Argmax(v);
  const float max = v[argmax];
  int32_t token = static_cast<int32_t>(argmax);
  const std::vector<uint64_t> w = Weights(v, params);
  if (!w.empty()) {
    const uint64_t total = std::accumulate(w.begin(), w.end(), uint64_t{0});
    const uint64_t target = DrawTarget(DrawBits(params.seed, params.step), total);
    uint64_t cum = 0;
    for (size_t i = 0; i < w.size(); ++i) {
      cum += w[i];
      if (cum > target) {
        token = static_cast<int32_t>(i);
        break;
      }
    }
  }
  float logprob = kNegInf;
  if (max != kNegInf) {
    double sum = 0.0;
    for (float x : v) sum += std::exp(static_cast<double>(x) - max);
    logprob = static_cast<float>((static_cast<double>(v[token]) - max) - std::log(sum));
  }
  return {token, logprob};
}

}  // namespace

std::vector<uint64_t> SampleWeightsRef(std::span<const float> logits,
                                       const cuda::SampleRowParams& params) {
  if (logits.empty()) return {};
  return Weights(SanitizeRow(logits), params);
}

SampleRowResult SampleRowRef(std::span<const float> logits, const cuda::SampleRowParams& params) {
  if (logits.empty()) return {0, kNegInf};
  return SampleSanitized(SanitizeRow(logits), params);
}

void SampleRef(const cuda::SampleParams& p) {
  const int64_t stride = p.logits_stride != 0 ? p.logits_stride : p.vocab;
  for (int32_t r = 0; r < p.rows; ++r) {
    const SampleRowResult res = SampleRowRef(
        std::span<const float>(p.logits + r * stride, static_cast<size_t>(p.vocab)), p.params[r]);
    p.out_tokens[r] = res.token;
    if (p.out_logprobs != nullptr) p.out_logprobs[r] = res.logprob;
  }
}

}  // namespace kvasir

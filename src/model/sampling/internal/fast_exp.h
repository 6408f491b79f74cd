// exp() for the softmax of the sampler: float in, float out, branch-free so loops over the
// vocabulary vectorize, and built from IEEE float arithmetic only, so a given input gives the
// same bits on every platform (libm's exp may differ in the last ulp), which keeps seeded
// sampling reproducible across machines.
#pragma once

#include <bit>
#include <cstdint>

namespace kvasir::internal {

// exp(x) for x <= 0 (the argument is always logit - max_logit). Relative error < 1e-7 for
// x >= -87; below that, and for -inf, exactly 0 so that masked tokens carry no weight at all.
// NaN in, NaN out. Cephes' expf: Cody-Waite reduction by ln 2, degree-5 minimax polynomial.
inline float ExpNonPositive(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kRoundShift = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  constexpr float kLn2Hi = 0.693359375f;
  constexpr float kLn2Lo = -2.12194440e-4f;
  const float shifted = x * kLog2e + kRoundShift;
  const float n = shifted - kRoundShift;  // round(x / ln 2)
  // The integer n sits in the low mantissa bits of `shifted`; unsigned arithmetic because for
  // arguments far below the range the difference wraps (the result is then discarded).
  const uint32_t biased =
      std::bit_cast<uint32_t>(shifted) - std::bit_cast<uint32_t>(kRoundShift) + 127u;
  float r = x - n * kLn2Hi;
  r = r - n * kLn2Lo;  // r in [-ln2 / 2, ln2 / 2]
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  // 2^n as a float; n is in [-126, 0] whenever the result is used.
  const float scale = std::bit_cast<float>(biased << 23);
  return x < -87.0f ? 0.0f : y * scale;
}

}  // namespace kvasir::internal

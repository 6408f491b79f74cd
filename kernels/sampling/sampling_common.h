// The parameter structs of the batched sampling kernel (sampling.cuh) and the arithmetic that
// the kernel and its CPU reference (sampling_ref.h) must do bit for bit alike. No CUDA headers:
// the reference and its test build without the toolkit.
//
// Bit-exact arithmetic. The token is drawn with integer arithmetic from fixed-point weights, so
// the GPU and the CPU agree exactly as long as every weight has the same bits on both. The
// weights come from a handful of IEEE float operations (subtract, multiply, an fma polynomial);
// on the device they are spelled as the _rn intrinsics, which nvcc never contracts or replaces,
// and host code that calls them must be compiled with -ffp-contract=off (the reference's CMake
// target is), so that no a * b + c is fused behind our back.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define KVASIR_SAMPLING_HD __host__ __device__ __forceinline__
#else
#define KVASIR_SAMPLING_HD inline
#endif

namespace kvasir::cuda {

struct SampleRowParams {     // one per row, device memory
  float temperature = 0.0f;  // 0 (or < 1e-5, or NaN): greedy argmax, lowest index on ties
  int32_t top_k = -1;        // <= 0 or >= vocab: off
  float top_p = 1.0f;        // >= 1 (or NaN): off; <= 0 keeps only the most likely token
  float min_p = 0.0f;        // <= 0 (or NaN): off; > 1 counts as 1
  uint64_t seed = 0;         // RNG key of the sequence
  uint64_t step = 0;         // RNG counter: the sequence's sample index
};

struct SampleParams {
  const float* logits = nullptr;  // [rows, vocab] fp32, row r at logits + r * logits_stride
  int64_t logits_stride = 0;      // 0: vocab; otherwise >= vocab
  int32_t rows = 0;
  int32_t vocab = 0;                        // 1 .. kMaxSampleVocab
  const SampleRowParams* params = nullptr;  // [rows]
  int32_t* out_tokens = nullptr;            // [rows]
  // [rows] optional: log-softmax of the chosen token under the raw (unmodified) logits, like
  // Sampler's SampleResult::logprob.
  float* out_logprobs = nullptr;
};

// Weights are fixed point with kWeightBits fraction bits (the most likely token weighs
// 2^kWeightBits), so a row's mass must stay below 2^63.
inline constexpr int kWeightBits = 40;
inline constexpr int32_t kMaxSampleVocab = 1 << 23;

namespace sampling_internal {

// Temperatures below this are greedy (as SamplingParams' kGreedyTemperature).
inline constexpr float kGreedyTemperature = 1e-5f;
// Sampler's tolerance: a nucleus whose mass is within this of top_p counts as reaching it.
inline constexpr double kTopPTolerance = 1e-6;
// "Keep every element equal to the cut key" (see Cut).
inline constexpr uint32_t kAllTies = 0xFFFFFFFFu;

KVASIR_SAMPLING_HD uint32_t FloatBits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
  return u;
#endif
}

KVASIR_SAMPLING_HD float BitsFloat(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, sizeof(x));
  return x;
#endif
}

// IEEE single operations, round to nearest even, never fused (see the file comment).
KVASIR_SAMPLING_HD float AddRn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
KVASIR_SAMPLING_HD float SubRn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
KVASIR_SAMPLING_HD float MulRn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
KVASIR_SAMPLING_HD float DivRn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
KVASIR_SAMPLING_HD float FmaRn(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

// High 64 bits of a * b.
KVASIR_SAMPLING_HD uint64_t MulHi64(uint64_t a, uint64_t b) {
#if defined(__CUDA_ARCH__)
  return __umul64hi(a, b);
#else
  __extension__ using U128 = unsigned __int128;
  return static_cast<uint64_t>((static_cast<U128>(a) * b) >> 64);
#endif
}

// The logit the sampler works with: NaN -> -inf, +inf -> the largest float (as Sampler does),
// and -0 -> +0 so that equal floats always have equal keys.
KVASIR_SAMPLING_HD float Sanitize(float x) {
  if (x != x) return -__builtin_inff();
  if (x == __builtin_inff()) return 3.40282347e+38f;
  return x == 0.0f ? 0.0f : x;
}

// Order-preserving key of a sanitized logit: a < b as floats iff key(a) < key(b), and equal
// floats have equal keys. Every sanitized logit has a key >= key(-inf) = 0x007FFFFF.
KVASIR_SAMPLING_HD uint32_t OrderKey(float sanitized) {
  const uint32_t u = FloatBits(sanitized);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

KVASIR_SAMPLING_HD float KeyToFloat(uint32_t key) {
  return BitsFloat((key & 0x80000000u) ? (key & 0x7FFFFFFFu) : ~key);
}

// 2^y for y <= 0, exactly 0 below -125 (and for -inf and NaN). Cephes' exp2f: y = n + f with
// n = round(y), f in [-1/2, 1/2], 2^f by a degree-6 polynomial (relative error < 2e-7), 2^n
// put into the exponent. Only IEEE operations, so host and device give the same bits.
KVASIR_SAMPLING_HD float Exp2NonPositive(float y) {
  if (!(y >= -125.0f)) return 0.0f;
  if (y > 0.0f) y = 0.0f;
  constexpr float kRoundShift = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float n = SubRn(AddRn(y, kRoundShift), kRoundShift);
  const float f = SubRn(y, n);  // exact
  float p = 1.535336188319500e-4f;
  p = FmaRn(p, f, 1.339887440266574e-3f);
  p = FmaRn(p, f, 9.618437357674640e-3f);
  p = FmaRn(p, f, 5.550332471162809e-2f);
  p = FmaRn(p, f, 2.402264791363012e-1f);
  p = FmaRn(p, f, 6.931472028550421e-1f);
  const float two_f = FmaRn(p, f, 1.0f);
  const uint32_t biased = static_cast<uint32_t>(static_cast<int32_t>(n) + 127);  // [2, 127]
  return MulRn(two_f, BitsFloat(biased << 23));
}

KVASIR_SAMPLING_HD bool IsGreedy(float temperature) { return !(temperature >= kGreedyTemperature); }

// log2(e) / T: y = (v - max) * scale is the token's log2 weight relative to the top token.
KVASIR_SAMPLING_HD float LogWeightScale(float temperature) {
  return DivRn(1.44269504088896341f, temperature);
}

// y <= 0 for every sanitized logit v of a row whose maximum is max (finite or FLT_MAX).
KVASIR_SAMPLING_HD float LogWeight(float v, float max, float scale) {
  return MulRn(SubRn(v, max), scale);
}

// Tokens with a log weight below this weigh nothing and are never drawn. A threshold on y (not
// on the rounded weight) so that the weighted tokens are a prefix of the order.
inline constexpr float kMinLogWeight = -40.0f;

// The token's weight p / p_max in fixed point: floor(2^y * 2^kWeightBits), at least 1 for
// y >= kMinLogWeight, 0 below; the top token weighs exactly 2^kWeightBits.
KVASIR_SAMPLING_HD uint64_t FixedWeight(float y) {
  if (!(y >= kMinLogWeight)) return 0;
  const float scaled = MulRn(Exp2NonPositive(y), 1099511627776.0f);  // * 2^40, exact
  const uint64_t w = static_cast<uint64_t>(scaled);
  return w != 0 ? w : 1;
}

KVASIR_SAMPLING_HD bool TopKActive(int32_t top_k, int32_t vocab) {
  return top_k > 0 && top_k < vocab;
}

KVASIR_SAMPLING_HD bool TopPActive(float top_p) { return top_p < 1.0f; }

// Top-p keeps the shortest prefix of the order whose mass reaches this (mass = the top-k mass),
// at least one token.
KVASIR_SAMPLING_HD uint64_t TopPTarget(float top_p, uint64_t mass) {
  const double t = (static_cast<double>(top_p) - kTopPTolerance) * static_cast<double>(mass);
  if (!(t > 1.0)) return 1;
#if defined(__CUDA_ARCH__)
  const double c = ceil(t);
#else
  const double c = std::ceil(t);
#endif
  if (c >= static_cast<double>(mass)) return mass;
  return static_cast<uint64_t>(c);
}

// Min-p keeps the tokens with log weight y >= the returned threshold: the smallest y (found by
// bisection over the float bits, so host and device agree) with 2^y >= min_p, i.e.
// p >= min_p * p_max up to the rounding of Exp2NonPositive. -inf when min-p is off.
KVASIR_SAMPLING_HD float MinPLogThreshold(float min_p) {
  if (!(min_p > 0.0f)) return -__builtin_inff();
  if (min_p > 1.0f) min_p = 1.0f;
  // y = -BitsFloat(u): lo satisfies 2^y >= min_p (y = -0), hi does not (y = -127).
  uint32_t lo = 0, hi = 0x42FE0000u;
  while (hi - lo > 1) {
    const uint32_t mid = lo + (hi - lo) / 2;
    if (Exp2NonPositive(-BitsFloat(mid)) >= min_p) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return -BitsFloat(lo);
}

// Philox4x32-10 (Salmon et al., SC'11; Random123's philox4x32_R(10, ctr, key)).
struct Philox4 {
  uint32_t v[4];
};

KVASIR_SAMPLING_HD Philox4 Philox4x32_10(Philox4 ctr, uint32_t key0, uint32_t key1) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      key0 += kW0;
      key1 += kW1;
    }
    const uint64_t p0 = static_cast<uint64_t>(kM0) * ctr.v[0];
    const uint64_t p1 = static_cast<uint64_t>(kM1) * ctr.v[2];
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    ctr = Philox4{{hi1 ^ ctr.v[1] ^ key0, lo1, hi0 ^ ctr.v[3] ^ key1, lo0}};
  }
  return ctr;
}

// The 64 random bits of one draw: key = seed, counter = (step, 0). Same (seed, step), same bits;
// rows with equal seed and step draw the same uniform.
KVASIR_SAMPLING_HD uint64_t DrawBits(uint64_t seed, uint64_t step) {
  const Philox4 ctr{{static_cast<uint32_t>(step), static_cast<uint32_t>(step >> 32), 0u, 0u}};
  const Philox4 out =
      Philox4x32_10(ctr, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  return static_cast<uint64_t>(out.v[0]) | (static_cast<uint64_t>(out.v[1]) << 32);
}

// The point of the draw: uniform in [0, mass) (mass > 0); the token is the first, in id order,
// whose running kept mass exceeds it.
KVASIR_SAMPLING_HD uint64_t DrawTarget(uint64_t bits, uint64_t mass) { return MulHi64(bits, mass); }

}  // namespace sampling_internal
}  // namespace kvasir::cuda

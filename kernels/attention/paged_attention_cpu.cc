#include "kernels/attention/paged_attention_cpu.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string_view>
#include <vector>

namespace kvasir {

namespace {

// exp(x) for x <= 0 (scores minus their max; -inf gives 0): 2^k · P(r) with
// x = k ln2 + r, |r| <= ln2 / 2, P the degree-6 Taylor/Remez polynomial of e^r (Cephes
// coefficients). Relative error below 2e-7 over the range; x < -87.3 flushes to 0.
#define KVASIR_EXP_BODY(V, x)                                                              \
  const auto lo = V::Set(-87.33654f);                                                      \
  const auto under = V::Less(x, lo);                                                       \
  x = V::Max(x, lo);                                                                       \
  const auto k = V::Round(V::Mul(x, V::Set(1.44269504088896341f)));                        \
  auto r = V::Fma(k, V::Set(-0.693359375f), x);                                           \
  r = V::Fma(k, V::Set(2.12194440e-4f), r);                                               \
  auto y = V::Set(1.9875691500e-4f);                                                       \
  y = V::Fma(y, r, V::Set(1.3981999507e-3f));                                              \
  y = V::Fma(y, r, V::Set(8.3334519073e-3f));                                              \
  y = V::Fma(y, r, V::Set(4.1665795894e-2f));                                              \
  y = V::Fma(y, r, V::Set(1.6666665459e-1f));                                              \
  y = V::Fma(y, r, V::Set(5.0000001201e-1f));                                              \
  y = V::Fma(y, V::Mul(r, r), V::Add(r, V::Set(1.0f)));                                   \
  y = V::Scale2(y, k);                                                                     \
  return V::ZeroWhere(y, under);

}  // namespace

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
namespace cpu_avx2 {
struct V {
  static constexpr int kWidth = 8;
  using Vec = __m256;
  using Mask = __m256;
  static Vec Zero() { return _mm256_setzero_ps(); }
  static Vec Set(float x) { return _mm256_set1_ps(x); }
  static Vec Load(const float* p) { return _mm256_loadu_ps(p); }
  static Vec LoadBf16(const uint16_t* p) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  static void Store(float* p, Vec v) { _mm256_storeu_ps(p, v); }
  static Vec Fma(Vec a, Vec b, Vec c) {
    return _mm256_fmadd_ps(a, b, c);
  }
  static Vec Mul(Vec a, Vec b) { return _mm256_mul_ps(a, b); }
  static Vec Add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
  static Vec Sub(Vec a, Vec b) { return _mm256_sub_ps(a, b); }
  static Vec Max(Vec a, Vec b) { return _mm256_max_ps(a, b); }
  static Mask Less(Vec a, Vec b) {
    return _mm256_cmp_ps(a, b, _CMP_LT_OQ);
  }
  static Vec Round(Vec a) {
    return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  static Vec Scale2(Vec y, Vec k) {
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k),
                                                         _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
  }
  static Vec ZeroWhere(Vec y, Mask m) {
    return _mm256_andnot_ps(m, y);
  }
  static Vec Exp(Vec x) { KVASIR_EXP_BODY(V, x) }
  // Lane j = the sum of a[j]'s lanes, for j < 8.
  static Vec Reduce(const Vec* a) {
    const __m256 t0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
    const __m256 t1 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
    return _mm256_add_ps(_mm256_permute2f128_ps(t0, t1, 0x20), _mm256_permute2f128_ps(t0, t1, 0x31));
  }
  static float Sum(Vec v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
};

#include "kernels/attention/paged_attention_cpu_body.inc"
}  // namespace cpu_avx2
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f")
#endif
namespace cpu_avx512 {
struct V {
  static constexpr int kWidth = 16;
  using Vec = __m512;
  using Mask = __mmask16;
  static Vec Zero() { return _mm512_setzero_ps(); }
  static Vec Set(float x) { return _mm512_set1_ps(x); }
  static Vec Load(const float* p) { return _mm512_loadu_ps(p); }
  static Vec LoadBf16(const uint16_t* p) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  static void Store(float* p, Vec v) { _mm512_storeu_ps(p, v); }
  static Vec Fma(Vec a, Vec b, Vec c) {
    return _mm512_fmadd_ps(a, b, c);
  }
  static Vec Mul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
  static Vec Add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
  static Vec Sub(Vec a, Vec b) { return _mm512_sub_ps(a, b); }
  static Vec Max(Vec a, Vec b) { return _mm512_max_ps(a, b); }
  static Mask Less(Vec a, Vec b) {
    return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ);
  }
  static Vec Round(Vec a) {
    return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  static Vec Scale2(Vec y, Vec k) { return _mm512_scalef_ps(y, k); }
  static Vec ZeroWhere(Vec y, Mask m) {
    return _mm512_maskz_mov_ps(static_cast<__mmask16>(~m), y);
  }
  static Vec Exp(Vec x) { KVASIR_EXP_BODY(V, x) }
  static float Sum(Vec v) { return _mm512_reduce_add_ps(v); }
  // Lane j = the sum of a[j]'s lanes, for j < 16: halves folded to 8 lanes, then the AVX2
  // 8-vector reduction on each half of the tokens.
  static Vec Reduce(const Vec* a) {
    __m256 h[16];
    for (int j = 0; j < 16; ++j) {
      h[j] = _mm256_add_ps(_mm512_castps512_ps256(a[j]),
                           _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a[j]), 1)));
    }
    const __m256 lo = Reduce8(h), hi = Reduce8(h + 8);
    return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(lo)),
                                               _mm256_castps_pd(hi), 1));
  }
  static __m256 Reduce8(const __m256* x) {
    const __m256 t0 = _mm256_hadd_ps(_mm256_hadd_ps(x[0], x[1]), _mm256_hadd_ps(x[2], x[3]));
    const __m256 t1 = _mm256_hadd_ps(_mm256_hadd_ps(x[4], x[5]), _mm256_hadd_ps(x[6], x[7]));
    return _mm256_add_ps(_mm256_permute2f128_ps(t0, t1, 0x20),
                         _mm256_permute2f128_ps(t0, t1, 0x31));
  }
};

#include "kernels/attention/paged_attention_cpu_body.inc"
}  // namespace cpu_avx512
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#undef KVASIR_EXP_BODY

namespace {



CpuIsa Detect() {
  __builtin_cpu_init();
  CpuIsa best = CpuIsa::kScalar;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = CpuIsa::kAvx2;
  if (__builtin_cpu_supports("avx512f")) best = CpuIsa::kAvx512;
  if (const char* cap = std::getenv("KVASIR_CPU_ISA")) {
    const std::string_view c(cap);
    const CpuIsa want = c == "scalar" ? CpuIsa::kScalar
                        : c == "avx2" ? CpuIsa::kAvx2
                                      : CpuIsa::kAvx512;
    best = std::min(best, want);
  }
  return best;
}

}  // namespace

CpuIsa DetectCpuIsa() {
  static const CpuIsa isa = Detect();
  return isa;
}

const char* CpuIsaName(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx512:
      return "avx512";
    case CpuIsa::kAvx2:
      return "avx2";
    case CpuIsa::kScalar:
      break;
  }
  return "scalar";
}

void PagedPartialAttentionCpu(const PagedAttentionParams& p, CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx512:
      return cpu_avx512::Attend(p);
    case CpuIsa::kAvx2:
      return cpu_avx2::Attend(p);
    case CpuIsa::kScalar:
      break;
  }
  PagedPartialAttentionRef(p);
}

void PagedPartialAttentionCpu(const PagedAttentionParams& p) {
  PagedPartialAttentionCpu(p, DetectCpuIsa());
}

}  // namespace kvasir

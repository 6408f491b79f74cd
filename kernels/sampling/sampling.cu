#include <cstdint>

#include "kernels/sampling/sampling.cuh"
#include "kernels/sampling/sampling_search.h"

namespace kvasir::cuda {
namespace {

using sampling_internal::BinPick;
using sampling_internal::Cut;
using sampling_internal::CutWeight;
using sampling_internal::DrawBits;
using sampling_internal::DrawTarget;
using sampling_internal::FixedWeight;
using sampling_internal::IsGreedy;
using sampling_internal::kAllTies;
using sampling_internal::KeyToFloat;
using sampling_internal::kMaxSearchLevels;
using sampling_internal::kSearchBins;
using sampling_internal::LevelDigit;
using sampling_internal::LogWeight;
using sampling_internal::LogWeightScale;
using sampling_internal::MinPLogThreshold;
using sampling_internal::NoCut;
using sampling_internal::OrderKey;
using sampling_internal::Sanitize;
using sampling_internal::SearchLevel;
using sampling_internal::Shorter;
using sampling_internal::TopKActive;
using sampling_internal::TopKSearch;
using sampling_internal::TopPActive;
using sampling_internal::TopPSearch;

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kBins = kSearchBins;
constexpr int kBinsPerThread = kBins / kThreads;
constexpr unsigned kFull = 0xFFFFFFFFu;
constexpr float kNegInf = -__builtin_inff();

using u64 = unsigned long long;  // what atomicAdd and the shuffles take
static_assert(sizeof(u64) == sizeof(uint64_t));

struct CountMass {
  uint32_t count;
  u64 mass;
};

// Per-row constants of the weights: y = (v - max) * scale.
struct RowConst {
  float max;
  float scale;
};

struct SharedState {
  uint32_t count[kBins];  // [kBins] histogram of the current digit: tokens
  u64 mass[kBins];        // [kBins] and their fixed-point mass
  uint32_t warp_count[kWarps];
  u64 warp_mass[kWarps];
  float warp_max[kWarps];
  int32_t warp_arg[kWarps];
  float warp_sum[kWarps];
  int pick_bin;
  CountMass pick_before;
  CountMass pick_in;
  int draw_warp;
  u64 draw_before;
  uint32_t draw_ties_before;
  u64 draw_target;
  int32_t token;
};

// ---------------------------------------------------------------------------------------------
// Reading a row. Elements come in groups of four consecutive ones; group g of a range starting
// at `begin` holds elements begin + 4g .. begin + 4g + 3 (those below `end`). A thread visits
// groups first, first + stride, ..., two loads in flight; 16-byte loads when `vec` (row + begin
// 16-byte aligned), scalar ones otherwise and for the last partial group.

__device__ __forceinline__ void LoadGroup(const float* row, int begin, int end, int g, bool vec,
                                          float (&x)[4]) {
  const int base = begin + 4 * g;
  if (vec && base + 4 <= end) {
    const float4 q = __ldg(reinterpret_cast<const float4*>(row + base));
    x[0] = q.x;
    x[1] = q.y;
    x[2] = q.z;
    x[3] = q.w;
  } else {
#pragma unroll
    for (int j = 0; j < 4; ++j) x[j] = base + j < end ? __ldg(row + base + j) : 0.0f;
  }
}

template <typename F>
__device__ __forceinline__ void VisitGroups(const float* row, int begin, int end, int first,
                                            int stride, bool vec, F& f) {
  const int groups = (end - begin + 3) / 4;
  int g = first;
  for (; g + stride < groups; g += 2 * stride) {
    float a[4], b[4];
    LoadGroup(row, begin, end, g, vec, a);
    LoadGroup(row, begin, end, g + stride, vec, b);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (begin + 4 * g + j < end) f(begin + 4 * g + j, a[j]);
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (begin + 4 * (g + stride) + j < end) f(begin + 4 * (g + stride) + j, b[j]);
    }
  }
  if (g < groups) {
    float a[4];
    LoadGroup(row, begin, end, g, vec, a);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (begin + 4 * g + j < end) f(begin + 4 * g + j, a[j]);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Warp and block scans.

__device__ __forceinline__ uint32_t WarpInclusiveScan(uint32_t x) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int off = 1; off < 32; off *= 2) {
    const uint32_t y = __shfl_up_sync(kFull, x, off);
    if (lane >= off) x += y;
  }
  return x;
}

__device__ __forceinline__ u64 WarpInclusiveScan(u64 x) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int off = 1; off < 32; off *= 2) {
    const u64 y = __shfl_up_sync(kFull, x, off);
    if (lane >= off) x += y;
  }
  return x;
}

template <typename T>
__device__ __forceinline__ T WarpSum(T x) {
#pragma unroll
  for (int off = 16; off > 0; off /= 2) x += __shfl_xor_sync(kFull, x, off);
  return x;
}

// Exclusive scan over the block in thread order; *total gets the block's sum.
__device__ CountMass BlockExclusiveScan(CountMass x, SharedState& sh, CountMass* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const uint32_t count_incl = WarpInclusiveScan(x.count);
  const u64 mass_incl = WarpInclusiveScan(x.mass);
  __syncthreads();  // the warp_* scratch may still be read by an earlier use
  if (lane == 31) {
    sh.warp_count[warp] = count_incl;
    sh.warp_mass[warp] = mass_incl;
  }
  __syncthreads();
  CountMass before{0, 0}, all{0, 0};
  for (int w = 0; w < kWarps; ++w) {
    const uint32_t c = sh.warp_count[w];
    const u64 m = sh.warp_mass[w];
    if (w < warp) {
      before.count += c;
      before.mass += m;
    }
    all.count += c;
    all.mass += m;
  }
  *total = all;
  return CountMass{before.count + count_incl - x.count, before.mass + mass_incl - x.mass};
}

// ---------------------------------------------------------------------------------------------
// Pass 1: max (sanitized), argmax (lowest id on ties) and sum of exp(v - max).

struct RowStats {
  float max;
  int32_t argmax;
  float sum;
};

__device__ __forceinline__ void MergeStats(RowStats& a, const RowStats& b) {
  const float m = fmaxf(a.max, b.max);
  float s = 0.0f;
  if (a.max != kNegInf) s += a.sum * __expf(a.max - m);
  if (b.max != kNegInf) s += b.sum * __expf(b.max - m);
  a.argmax = a.max > b.max ? a.argmax : (b.max > a.max ? b.argmax : min(a.argmax, b.argmax));
  a.max = m;
  a.sum = s;
}

__device__ RowStats ComputeStats(const float* row, int vocab, bool vec, SharedState& sh) {
  RowStats st{kNegInf, 0x7FFFFFFF, 0.0f};
  auto f = [&st](int i, float raw) {
    const float v = Sanitize(raw);
    if (v > st.max) {
      st.sum = (st.max == kNegInf ? 0.0f : st.sum * __expf(st.max - v)) + 1.0f;
      st.max = v;
      st.argmax = i;
    } else {
      if (v == st.max && i < st.argmax) st.argmax = i;
      if (v != kNegInf) st.sum += __expf(v - st.max);
    }
  };
  VisitGroups(row, 0, vocab, threadIdx.x, kThreads, vec, f);
#pragma unroll
  for (int off = 16; off > 0; off /= 2) {
    const RowStats o{__shfl_xor_sync(kFull, st.max, off), __shfl_xor_sync(kFull, st.argmax, off),
                     __shfl_xor_sync(kFull, st.sum, off)};
    MergeStats(st, o);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    sh.warp_max[warp] = st.max;
    sh.warp_arg[warp] = st.argmax;
    sh.warp_sum[warp] = st.sum;
  }
  __syncthreads();
  RowStats all{sh.warp_max[0], sh.warp_arg[0], sh.warp_sum[0]};
  for (int w = 1; w < kWarps; ++w)
    MergeStats(all, RowStats{sh.warp_max[w], sh.warp_arg[w], sh.warp_sum[w]});
  return all;  // every thread merged the same values in the same order
}

// ---------------------------------------------------------------------------------------------
// Search passes (sampling_search.h decides; these count).

// Histogram of the level's digits over the tokens the level looks at: token counts, and with
// kMass their fixed-point weights.
template <bool kMass>
__device__ void Histogram(const float* row, int vocab, bool vec, RowConst rc,
                          const SearchLevel& level, SharedState& sh) {
  for (int b = threadIdx.x; b < kBins; b += kThreads) {
    sh.count[b] = 0;
    sh.mass[b] = 0;
  }
  __syncthreads();
  auto f = [&](int, float raw) {
    const float v = Sanitize(raw);
    uint32_t d;
    float y;
    if (!LevelDigit(level, v, OrderKey(v), rc.max, rc.scale, &d, &y)) return;
    atomicAdd(&sh.count[d], 1u);
    if (kMass) atomicAdd(&sh.mass[d], static_cast<u64>(FixedWeight(y)));
  };
  VisitGroups(row, 0, vocab, threadIdx.x, kThreads, vec, f);
  __syncthreads();
}

// The first bin, from the highest digit down, at which the running count (or mass, by_mass)
// reaches need_fn(total mass of all bins). Block-wide; every thread gets the same answer.
template <typename NeedFn>
__device__ BinPick PickBin(SharedState& sh, bool by_mass, NeedFn need_fn, uint64_t* total_mass) {
  if (threadIdx.x == 0) sh.pick_bin = -1;  // ordered before the writes below by the scan's syncs
  // Thread t owns bins kBins - 1 - kBinsPerThread * t - j, j = 0 .., i.e. highest first.
  CountMass mine[kBinsPerThread];
  CountMass local{0, 0};
#pragma unroll
  for (int j = 0; j < kBinsPerThread; ++j) {
    const int b = kBins - 1 - kBinsPerThread * static_cast<int>(threadIdx.x) - j;
    mine[j] = CountMass{sh.count[b], sh.mass[b]};
    local.count += mine[j].count;
    local.mass += mine[j].mass;
  }
  CountMass total;
  CountMass run = BlockExclusiveScan(local, sh, &total);
  const u64 need = need_fn(static_cast<uint64_t>(total.mass));
#pragma unroll
  for (int j = 0; j < kBinsPerThread; ++j) {
    const u64 before = by_mass ? run.mass : run.count;
    const u64 incl = before + (by_mass ? mine[j].mass : mine[j].count);
    if (before < need && incl >= need) {
      sh.pick_bin = kBins - 1 - kBinsPerThread * static_cast<int>(threadIdx.x) - j;
      sh.pick_before = run;
      sh.pick_in = mine[j];
    }
    run.count += mine[j].count;
    run.mass += mine[j].mass;
  }
  __syncthreads();
  BinPick pick;
  pick.bin = sh.pick_bin;
  if (pick.bin >= 0) {
    pick.count_before = sh.pick_before.count;
    pick.mass_before = sh.pick_before.mass;
    pick.count = sh.pick_in.count;
    pick.mass = sh.pick_in.mass;
  }
  __syncthreads();  // everyone has read pick_* before the next search may reset it
  *total_mass = total.mass;
  return pick;
}

// The cut of the first k tokens (0 < k < vocab); with kMass, *kept_mass gets their mass.
template <bool kMass>
__device__ Cut SearchTopK(const float* row, int vocab, bool vec, RowConst rc, uint32_t k,
                          SharedState& sh, uint64_t* kept_mass) {
  TopKSearch s;
  s.k = k;
  for (int i = 0; i < kMaxSearchLevels && !s.done; ++i) {
    Histogram<kMass>(row, vocab, vec, rc, s.level, sh);
    const uint64_t need = s.Need();
    uint64_t total_mass;
    const BinPick pick = PickBin(
        sh, false, [need](uint64_t) { return u64{need}; }, &total_mass);
    s.Step(pick, total_mass, rc.max, rc.scale);
  }
  *kept_mass = s.kept_mass;
  return s.done ? s.cut : NoCut();
}

// The cut of the shortest prefix whose mass reaches top_p of topk_mass (0: of all tokens).
__device__ Cut SearchTopP(const float* row, int vocab, bool vec, RowConst rc, float top_p,
                          uint64_t topk_mass, SharedState& sh) {
  TopPSearch s;
  s.Start(top_p, topk_mass);
  for (int i = 0; i < kMaxSearchLevels && !s.done; ++i) {
    Histogram<true>(row, vocab, vec, rc, s.level, sh);
    uint64_t total_mass;
    const BinPick pick = PickBin(
        sh, true, [&s](uint64_t total) { return u64{s.Need(total)}; }, &total_mass);
    s.Step(pick, rc.max, rc.scale);
  }
  return s.done ? s.cut : NoCut();
}

// ---------------------------------------------------------------------------------------------
// The draw: inverse CDF in id order over the kept tokens (those in `cut` with y >= min_y).
// Warp w sums the kept mass of its contiguous chunk; warp 0 scans the chunk masses and picks the
// chunk that holds the target; that warp rescans its chunk 128 tokens at a time.
__device__ int32_t Draw(const float* row, int vocab, bool vec, RowConst rc, Cut cut, float min_y,
                        uint64_t bits, int32_t fallback, SharedState& sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int groups = (vocab + 3) / 4;
  // Chunks are whole multiples of 32 groups, so every chunk starts 16-byte aligned when the
  // row does, and a 32-lane step covers 128 tokens.
  const int chunk_groups = ((groups + kWarps - 1) / kWarps + 31) / 32 * 32;
  const int begin = min(warp * chunk_groups * 4, vocab);
  const int end = min(begin + chunk_groups * 4, vocab);

  // Tokens with the cut's key share one weight; which of them are kept depends on their rank.
  const u64 tie_w = cut.key != 0
                        ? CutWeight(cut.key, LogWeight(KeyToFloat(cut.key), rc.max, rc.scale),
                                    Cut{cut.key, kAllTies}, 0, min_y)
                        : 0;

  u64 mass = 0;
  uint32_t ties = 0;
  auto f = [&](int, float raw) {
    const float v = Sanitize(raw);
    const uint32_t key = OrderKey(v);
    if (key <= cut.key) {
      ties += key == cut.key;
      return;
    }
    mass += CutWeight(key, LogWeight(v, rc.max, rc.scale), cut, 0, min_y);
  };
  VisitGroups(row, begin, end, lane, 32, vec, f);
  mass = WarpSum(mass);
  ties = WarpSum(ties);
  if (lane == 0) {
    sh.warp_mass[warp] = mass;
    sh.warp_count[warp] = ties;
  }
  __syncthreads();
  if (warp == 0) {
    u64 m = lane < kWarps ? sh.warp_mass[lane] : 0;
    const uint32_t t = lane < kWarps ? sh.warp_count[lane] : 0;
    const uint32_t t_before = WarpInclusiveScan(t) - t;  // ties in the chunks before
    uint32_t kept_ties = t;
    if (cut.ties != kAllTies) kept_ties = cut.ties > t_before ? min(cut.ties - t_before, t) : 0;
    m += u64{kept_ties} * tie_w;
    const u64 m_incl = WarpInclusiveScan(m);
    const u64 m_before = m_incl - m;
    const u64 total = __shfl_sync(kFull, m_incl, 31);
    const u64 target = total != 0 ? DrawTarget(bits, total) : 0;
    const bool mine = m != 0 && m_before <= target && target < m_incl;
    const unsigned ballot = __ballot_sync(kFull, mine);
    if (lane == 0) {
      sh.draw_warp = ballot != 0 ? __ffs(ballot) - 1 : -1;
      sh.draw_target = target;
      sh.token = fallback;
    }
    if (mine) {
      sh.draw_before = m_before;
      sh.draw_ties_before = t_before;
    }
  }
  __syncthreads();
  if (warp == sh.draw_warp) {
    const u64 target = sh.draw_target;
    u64 run = sh.draw_before;
    uint32_t run_ties = sh.draw_ties_before;
    for (int g0 = 0; begin + 4 * g0 < end; g0 += 32) {  // warp-uniform
      const int g = g0 + lane;
      float x[4];
      LoadGroup(row, begin, end, g, vec, x);
      u64 w[4];
      bool tie[4];
      uint32_t c = 0;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        w[j] = 0;
        tie[j] = false;
        if (begin + 4 * g + j >= end) continue;
        const float v = Sanitize(x[j]);
        const uint32_t key = OrderKey(v);
        if (key == cut.key) {
          tie[j] = true;
          ++c;
        } else if (key > cut.key) {
          w[j] = CutWeight(key, LogWeight(v, rc.max, rc.scale), cut, 0, min_y);
        }
      }
      const uint32_t c_incl = WarpInclusiveScan(c);
      uint32_t rank = run_ties + c_incl - c;  // id-order rank of this lane's first tie
      u64 sum = 0;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        if (tie[j]) {
          if (cut.ties == kAllTies || rank < cut.ties) w[j] = tie_w;
          ++rank;
        }
        sum += w[j];
      }
      const u64 s_incl = WarpInclusiveScan(sum);
      const unsigned hit = __ballot_sync(kFull, run + s_incl > target);
      if (hit != 0) {
        if (lane == __ffs(hit) - 1) {
          u64 cum = run + s_incl - sum;
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            cum += w[j];
            if (cum > target) {
              sh.token = begin + 4 * g + j;
              break;
            }
          }
        }
        break;
      }
      run += __shfl_sync(kFull, s_incl, 31);
      run_ties += __shfl_sync(kFull, c_incl, 31);
    }
  }
  __syncthreads();
  return sh.token;
}

// One CTA per row.
__global__ void __launch_bounds__(kThreads, 2) SampleKernel(SampleParams p, int64_t stride) {
  __shared__ SharedState sh;
  const int64_t r = blockIdx.x;
  const float* row = p.logits + r * stride;
  const bool vec = (reinterpret_cast<uintptr_t>(row) & 15u) == 0;
  const SampleRowParams rp = p.params[r];
  const RowStats st = ComputeStats(row, p.vocab, vec, sh);
  int32_t token = st.argmax;
  if (!IsGreedy(rp.temperature) && st.max != kNegInf) {
    const RowConst rc{st.max, LogWeightScale(rp.temperature)};
    const bool top_p = TopPActive(rp.top_p);
    Cut cut = NoCut();
    uint64_t topk_mass = 0;
    if (TopKActive(rp.top_k, p.vocab)) {
      const uint32_t k = static_cast<uint32_t>(rp.top_k);
      cut = top_p ? SearchTopK<true>(row, p.vocab, vec, rc, k, sh, &topk_mass)
                  : SearchTopK<false>(row, p.vocab, vec, rc, k, sh, &topk_mass);
    }
    if (top_p) cut = Shorter(cut, SearchTopP(row, p.vocab, vec, rc, rp.top_p, topk_mass, sh));
    token = Draw(row, p.vocab, vec, rc, cut, MinPLogThreshold(rp.min_p), DrawBits(rp.seed, rp.step),
                 st.argmax, sh);
  }
  if (threadIdx.x == 0) {
    p.out_tokens[r] = token;
    if (p.out_logprobs != nullptr) {
      p.out_logprobs[r] =
          st.max == kNegInf ? kNegInf : (Sanitize(__ldg(row + token)) - st.max) - logf(st.sum);
    }
  }
}

}  // namespace

cudaError_t InvokeSample(const SampleParams& p, cudaStream_t stream) {
  if (p.rows < 0 || p.vocab < 1 || p.vocab > kMaxSampleVocab || p.logits_stride < 0 ||
      (p.logits_stride != 0 && p.logits_stride < p.vocab)) {
    return cudaErrorInvalidValue;
  }
  if (p.rows == 0) return cudaSuccess;
  if (p.logits == nullptr || p.params == nullptr || p.out_tokens == nullptr) {
    return cudaErrorInvalidValue;
  }
  const int64_t stride = p.logits_stride != 0 ? p.logits_stride : p.vocab;
  SampleKernel<<<static_cast<unsigned>(p.rows), kThreads, 0, stream>>>(p, stride);
  return cudaGetLastError();
}

}  // namespace kvasir::cuda

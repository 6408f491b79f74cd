#include <algorithm>
#include <atomic>
#include <cmath>

#include "kernels/attention/merge_attention.cuh"
#include "kernels/attention/paged_decode.cuh"
#include "kernels/common/vec.cuh"

namespace kvasir::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxGroup = 8;  // query heads per CTA; larger groups use gridDim.z
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr unsigned kFullMask = 0xffffffffu;

constexpr int Min(int a, int b) { return a < b ? a : b; }
constexpr int Max(int a, int b) { return a > b ? a : b; }
constexpr size_t MaxSize(size_t a, size_t b) { return a > b ? a : b; }

// Shape of the work of one warp, derived from the storage type, head_dim and the heads per CTA.
//
// A K or V row is read as 16-byte chunks. kTpt lanes share a token (a "token group"), each
// holding kChunksPerLane chunks = kDq elements of head_dim, so a warp covers kJ = 32 / kTpt
// tokens per step. A warp tile is kSteps steps = kTileTok tokens: its scores are computed
// together, so the softmax rescales the accumulators once per tile, not once per token.
template <typename KvT, int kHeadDim, int kGroup>
struct Shape {
  static constexpr int kChunkElems = 16 / static_cast<int>(sizeof(KvT));
  static constexpr int kChunksPerRow = kHeadDim / kChunkElems;
  static constexpr int kTpt = Min(kChunksPerRow, 32);
  static constexpr int kChunksPerLane = kChunksPerRow / kTpt;
  static constexpr int kDq = kChunksPerLane * kChunkElems;
  static constexpr int kJ = 32 / kTpt;
  // Enough steps that the kN = kSteps * kGroup partial dot products fill the token group's lanes
  // (so the reduce-scatter below ends with one score per lane), at most 16 of them (registers)
  // and at most 4 chunks per lane per tile for each of K and V (a 4 KB stage for 16-byte chunks).
  static constexpr int kSteps =
      Min(Min(Max(1, 4 / kChunksPerLane), Max(1, kTpt / kGroup)), Max(1, 16 / kGroup));
  static constexpr int kTileTok = kSteps * kJ;
  static constexpr int kN = kSteps * kGroup;
  static constexpr int kHold = Max(1, kN / kTpt);  // scores per lane after the reduce-scatter
  static constexpr int kRep = Max(1, kTpt / kN);   // lanes holding the same score
  static constexpr int kStepChunks = 32 * kChunksPerLane;        // of K (or V) per step
  static constexpr int kStageChunks = 2 * kSteps * kStepChunks;  // K then V
  // Stages per warp: about 8 KB in flight per warp while one stage is being computed.
  static constexpr int kStages = Max(3, Min(8, 1 + 8192 / (kStageChunks * 16)));
  static constexpr int kPRow = (kN + kGroup + 3) / 4 * 4;  // p[kN] then corr[kGroup], padded
  static constexpr int kParts = kWarps * kJ;               // online-softmax states per CTA
  static constexpr size_t kPipeBytes = size_t{kWarps} * kStages * kStageChunks * 16;
  static constexpr size_t kMergeBytes = size_t{kParts} * kGroup * (kHeadDim + 2) * sizeof(float);
  static constexpr size_t kPBytes = size_t{kWarps} * kJ * kPRow * sizeof(float);
  static constexpr size_t kPOffset = MaxSize(kPipeBytes, kMergeBytes);  // pbuf after the union
  static constexpr size_t kSmemBytes = kPOffset + kPBytes;
  // q and the accumulators take 2 * kGroup * kDq registers: 64 fit 4 CTAs (16 warps) per SM.
  static constexpr int kMinBlocks = kGroup * kDq <= 32 ? 4 : 2;
  static_assert(kTpt * kChunksPerLane == kChunksPerRow && 32 % kTpt == 0);
  static_assert(kHold * kTpt == kN * kRep);
};

// CTAs per SM that PlanPagedDecode assumes (kMinBlocks of the bf16 kernels).
int32_t CtasPerSm(int32_t group) { return group <= 4 ? 4 : 2; }

// t / d for 0 <= t < 2^31 and 1 <= d < 2^31 without a division (Granlund-Montgomery: one
// multiply-high, an add and a shift), so any page size is as cheap as a power of two.
struct FastDiv {
  uint32_t d = 1, magic = 1, shift = 0;
  explicit FastDiv(uint32_t divisor) : d(divisor) {
    while ((uint64_t{1} << shift) < d) ++shift;
    magic = static_cast<uint32_t>(((uint64_t{1} << 32) * ((uint64_t{1} << shift) - d)) / d + 1);
  }
  __device__ __forceinline__ int32_t Div(int32_t t) const {
    const uint32_t u = static_cast<uint32_t>(t);
    return static_cast<int32_t>((__umulhi(u, magic) + u) >> shift);
  }
};

// No L2 prefetch-size hint: .L2::256B measured 4-8% slower on the H200 (kernels/NOTES.md).
__device__ __forceinline__ void CpAsync16(void* smem, const void* gmem, bool valid) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int n = valid ? 16 : 0;  // 0: nothing is read, the 16 bytes are zero-filled
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n)
               : "memory");
}
__device__ __forceinline__ void CpAsyncCommit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int kPending>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

// One 16-byte chunk as floats.
__device__ __forceinline__ void Unpack(const uint4& raw, float* out, float) {
  out[0] = __uint_as_float(raw.x);
  out[1] = __uint_as_float(raw.y);
  out[2] = __uint_as_float(raw.z);
  out[3] = __uint_as_float(raw.w);
}
__device__ __forceinline__ void Unpack(const uint4& raw, float* out, __nv_bfloat16) {
  const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    out[2 * i] = __uint_as_float(w[i] << 16);
    out[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  }
}

// kCount floats from shared memory (16-byte aligned for kCount % 4 == 0, 8 for kCount == 2).
template <int kCount>
__device__ __forceinline__ void LoadShared(const float* src, float (&out)[kCount]) {
  if constexpr (kCount % 4 == 0) {
#pragma unroll
    for (int i = 0; i < kCount / 4; ++i) {
      const float4 v = reinterpret_cast<const float4*>(src)[i];
      out[4 * i] = v.x;
      out[4 * i + 1] = v.y;
      out[4 * i + 2] = v.z;
      out[4 * i + 3] = v.w;
    }
  } else if constexpr (kCount == 2) {
    const float2 v = *reinterpret_cast<const float2*>(src);
    out[0] = v.x;
    out[1] = v.y;
  } else {
#pragma unroll
    for (int i = 0; i < kCount; ++i) out[i] = src[i];
  }
}

// Butterfly reduce-scatter of kCount values over the lane bits below kOffset * 2: at offset o
// every lane keeps the lower half of its values and adds the partner's upper half, so n values
// cost n / 2 shuffles instead of n. For this to sum matching values, each lane stores value v at
// x[v ^ vbase] (vbase: the lane's final index, below), i.e. its own half is always the lower one
// and no selects are needed. Once one value is left the remaining offsets sum it in full.
// Afterwards, with T = 2 * kOffset lanes and kCount = N, lane c holds in x[0, max(1, N / T)) the
// values vbase + i, vbase = (c / max(1, T / N)) * max(1, N / T).
template <int kOffset, int kCount, int kSize>
__device__ __forceinline__ void ReduceScatter(float (&x)[kSize]) {
  if constexpr (kOffset >= 1) {
    if constexpr (kCount > 1) {
      constexpr int kHalf = kCount / 2;
#pragma unroll
      for (int i = 0; i < kHalf; ++i) x[i] += __shfl_xor_sync(kFullMask, x[i + kHalf], kOffset);
      ReduceScatter<kOffset / 2, kHalf>(x);
    } else {
      x[0] += __shfl_xor_sync(kFullMask, x[0], kOffset);
      ReduceScatter<kOffset / 2, 1>(x);
    }
  }
}

// One CTA per (item, split, chunk of kGroup query heads), 4 warps. The CTA's range is cut into
// warp tiles of kTileTok consecutive tokens; warp w takes tiles w, w + 4, ... and streams them
// through its own kStages-deep cp.async ring in shared memory. Each lane copies exactly the
// chunks it later reads, so the warps never wait for one another inside the loop. Per tile:
// partial dot products of every (token, head) -> one butterfly reduce-scatter -> per-head tile
// max -> one exp2 per lane -> p through shared memory -> acc += p V. Each token group keeps its
// own online softmax (m in log2 units); the CTA merges them through shared memory at the end.
template <typename KvT, int kHeadDim, int kGroup>
__global__ void __launch_bounds__(kThreads, (Shape<KvT, kHeadDim, kGroup>::kMinBlocks))
    PagedDecodeKernel(const PagedDecodeParams<KvT> p, const FastDiv page_div) {
  using S = Shape<KvT, kHeadDim, kGroup>;
  constexpr int kTpt = S::kTpt, kJ = S::kJ, kDq = S::kDq, kSteps = S::kSteps, kN = S::kN;
  constexpr int kHold = S::kHold, kRep = S::kRep, kStages = S::kStages;
  constexpr int kChunkElems = S::kChunkElems, kChunksPerLane = S::kChunksPerLane;

  extern __shared__ __align__(16) unsigned char smem[];
  uint4* const ring = reinterpret_cast<uint4*>(smem);  // [kWarps][kStages][kStageChunks]
  float* const pbuf = reinterpret_cast<float*>(smem + S::kPOffset);

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // The merge kernel (launched as a programmatic dependent) may be scheduled now; it waits for
  // this whole grid to finish before it reads the workspace.
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif

  const int item = blockIdx.x;
  const int split = blockIdx.y;
  const int head0 = blockIdx.z * kGroup;
  const int nh = min(kGroup, p.group - head0);
  const int tid = threadIdx.x;
  const int warp = tid / 32, lane = tid % 32;
  const int j = lane / kTpt, c = lane % kTpt;

  const int32_t item_begin = p.begin[item];
  const int32_t item_end = p.end[item];
  int32_t cb = item_begin, ce = item_end;
  if (p.num_splits > 1) {
    const int64_t b = int64_t{item_begin} + int64_t{split} * p.kv_chunk_size;
    cb = static_cast<int32_t>(min(b, int64_t{item_end}));
    ce = split == p.num_splits - 1
             ? item_end
             : static_cast<int32_t>(min(b + p.kv_chunk_size, int64_t{item_end}));
  }
  const int32_t* const table = p.block_ids + p.block_table_offsets[item];
  const int32_t bs = p.block_size;
  const int64_t q_stride = p.q_stride ? p.q_stride : int64_t{p.group} * kHeadDim;

  // The lane's scores after the reduce-scatter are vbase + [0, kHold) (v = step * kGroup + head);
  // before it, it stores partial v at x[v ^ vbase], i.e. step s ^ sx and head h ^ hx in slot
  // (s, h): the q registers hold the heads in that permuted order.
  const int vbase = (c / kRep) * kHold;
  const int sx = vbase / kGroup, hx = vbase % kGroup;

  // q pre-scaled so that scores are in log2 units: exp(s) = exp2(s * log2 e); q[h] is head h ^ hx.
  float q[kGroup][kDq];
  const float qscale = p.scale * kLog2e;
#pragma unroll
  for (int h = 0; h < kGroup; ++h) {
#pragma unroll
    for (int k = 0; k < kChunksPerLane; ++k) {
      float* dst = &q[h][k * kChunkElems];
      if ((h ^ hx) < nh) {
        const float* src = p.q + item * q_stride + int64_t{head0 + (h ^ hx)} * kHeadDim +
                           (k * kTpt + c) * kChunkElems;
#pragma unroll
        for (int e = 0; e < kChunkElems; e += 4) {
          const float4 v = *reinterpret_cast<const float4*>(src + e);
          dst[e] = v.x * qscale;
          dst[e + 1] = v.y * qscale;
          dst[e + 2] = v.z * qscale;
          dst[e + 3] = v.w * qscale;
        }
      } else {
#pragma unroll
        for (int e = 0; e < kChunkElems; ++e) dst[e] = 0.0f;
      }
    }
  }

  // Online softmax state: m and l of the scores this lane holds after the reduce-scatter (head
  // (vbase + i) % kGroup; m is the same on every lane of a token group for one head, l sums only
  // this lane's slots), acc of all heads (natural order) over this lane's dims.
  float m[kHold], l[kHold], acc[kGroup][kDq];
#pragma unroll
  for (int i = 0; i < kHold; ++i) {
    m[i] = -INFINITY;
    l[i] = 0.0f;
  }
#pragma unroll
  for (int h = 0; h < kGroup; ++h) {
#pragma unroll
    for (int e = 0; e < kDq; ++e) acc[h][e] = 0.0f;
  }

  const int32_t len = ce > cb ? ce - cb : 0;
  const int32_t ntiles = (len + S::kTileTok - 1) / S::kTileTok;
  const int32_t mine = ntiles > warp ? (ntiles - warp + kWarps - 1) / kWarps : 0;
  // First token of this lane's token group in step s of the warp's local tile i.
  auto token = [&](int32_t i, int s) {
    return cb + (warp + i * kWarps) * S::kTileTok + s * kJ + j;
  };
  auto page_of = [&](int32_t t) { return page_div.Div(t); };
  // Block ids of the lane's tokens of tile i (0 past the range: those rows are never read).
  auto load_blocks = [&](int32_t i, int32_t(&blk)[kSteps]) {
#pragma unroll
    for (int s = 0; s < kSteps; ++s) {
      const int32_t t = token(i, s);
      blk[s] = (i < mine && t < ce) ? __ldg(table + page_of(t)) : 0;
    }
  };
  uint4* const my_ring = ring + warp * kStages * S::kStageChunks;
  auto issue = [&](int32_t i, const int32_t(&blk)[kSteps]) {
    uint4* const stage = my_ring + (i % kStages) * S::kStageChunks;
#pragma unroll
    for (int s = 0; s < kSteps; ++s) {
      const int32_t t = token(i, s);
      const bool valid = t < ce;
      const int32_t slot = t - page_of(t) * bs;
      const int64_t row = valid ? int64_t{blk[s]} * bs + slot : 0;
      const KvT* const k_row = p.k_pool + row * kHeadDim;
      const KvT* const v_row = p.v_pool + row * kHeadDim;
#pragma unroll
      for (int k = 0; k < kChunksPerLane; ++k) {
        const int off = (k * kTpt + c) * kChunkElems;
        CpAsync16(stage + s * S::kStepChunks + k * 32 + lane, k_row + off, valid);
        CpAsync16(stage + (kSteps + s) * S::kStepChunks + k * 32 + lane, v_row + off, valid);
      }
    }
  };

  float* const my_p = pbuf + (warp * kJ + j) * S::kPRow;
  int32_t blk[kSteps];
  {
    int32_t pro[kStages - 1][kSteps];
#pragma unroll
    for (int st = 0; st < kStages - 1; ++st) load_blocks(st, pro[st]);
    load_blocks(kStages - 1, blk);
#pragma unroll
    for (int st = 0; st < kStages - 1; ++st) {
      if (st < mine) issue(st, pro[st]);
      CpAsyncCommit();
    }
  }

  for (int32_t i = 0; i < mine; ++i) {
    const int32_t ip = i + kStages - 1;
    if (ip < mine) {
      issue(ip, blk);
      load_blocks(ip + 1, blk);  // used one iteration later: the table load overlaps compute
    }
    CpAsyncCommit();
    CpAsyncWait<kStages - 1>();  // this lane's copies of tile i have landed
    const uint4* const stage = my_ring + (i % kStages) * S::kStageChunks;

    // Scores: partial dot products over this lane's dims; slot (s, h) holds step s ^ sx with
    // head h ^ hx (q is stored permuted), i.e. value v at x[v ^ vbase].
    float x[kN];
#pragma unroll
    for (int s = 0; s < kSteps; ++s) {
      float kf[kDq];
      const uint4* const k_src = stage + (s ^ sx) * S::kStepChunks + lane;
#pragma unroll
      for (int k = 0; k < kChunksPerLane; ++k) Unpack(k_src[k * 32], kf + k * kChunkElems, KvT{});
#pragma unroll
      for (int h = 0; h < kGroup; ++h) {
        float a = 0.0f;
#pragma unroll
        for (int e = 0; e < kDq; ++e) a = fmaf(q[h][e], kf[e], a);
        x[s * kGroup + h] = a;
      }
    }
    ReduceScatter<kTpt / 2, kN>(x);

    // Tile max per head over the steps (lanes of one head differ in the bits >= kGroup * kRep),
    // then one rescale factor per head and one exp2 per held score.
    bool changed = false;
    const int32_t t0 = token(i, 0) - j;
#pragma unroll
    for (int u = 0; u < kHold; ++u) {
      const int v = vbase + u;
      if (t0 + (v / kGroup) * kJ + j >= ce) x[u] = -INFINITY;
      float tmax = x[u];
#pragma unroll
      for (int o = kGroup * kRep; o < kTpt; o *= 2) {
        tmax = fmaxf(tmax, __shfl_xor_sync(kFullMask, tmax, o));
      }
      const float m_new = fmaxf(m[u], tmax);
      const float m_safe = m_new == -INFINITY ? 0.0f : m_new;
      const float corr = exp2f(m[u] - m_safe);  // 0 while m is −inf
      const float pr = exp2f(x[u] - m_safe);
      l[u] = fmaf(l[u], corr, pr);
      changed = changed || m_new != m[u];
      m[u] = m_new;
      my_p[v] = pr;
      if (v < kGroup) my_p[kN + v] = corr;
    }
    const bool rescale = __any_sync(kFullMask, changed);
    __syncwarp();
    if (rescale) {
      float corr[kGroup];
      LoadShared(my_p + kN, corr);
#pragma unroll
      for (int h = 0; h < kGroup; ++h) {
#pragma unroll
        for (int e = 0; e < kDq; ++e) acc[h][e] *= corr[h];
      }
    }
#pragma unroll
    for (int s = 0; s < kSteps; ++s) {
      float vf[kDq];
#pragma unroll
      for (int k = 0; k < kChunksPerLane; ++k) {
        Unpack(stage[(kSteps + s) * S::kStepChunks + k * 32 + lane], vf + k * kChunkElems, KvT{});
      }
      float pr[kGroup];
      LoadShared(my_p + s * kGroup, pr);
#pragma unroll
      for (int h = 0; h < kGroup; ++h) {
#pragma unroll
        for (int e = 0; e < kDq; ++e) acc[h][e] = fmaf(pr[h], vf[e], acc[h][e]);
      }
    }
    __syncwarp();  // my_p is rewritten by the next tile
  }

  // Merge the kParts = kWarps * kJ states of the CTA through shared memory (the ring is free).
  CpAsyncWait<0>();
  __syncthreads();
  float* const part_acc = reinterpret_cast<float*>(smem);          // [kParts][kGroup][kHeadDim]
  float* const part_m = part_acc + S::kParts * kGroup * kHeadDim;  // [kParts][kGroup]
  float* const part_l = part_m + S::kParts * kGroup;               // [kParts][kGroup]
  const int pi = warp * kJ + j;
#pragma unroll
  for (int u = 0; u < kHold; ++u) {
    float lsum = l[u];
#pragma unroll
    for (int o = kGroup * kRep; o < kTpt; o *= 2) lsum += __shfl_xor_sync(kFullMask, lsum, o);
    const int v = vbase + u;
    if (v < kGroup && c % kRep == 0) {
      part_m[pi * kGroup + v] = m[u];
      part_l[pi * kGroup + v] = lsum;
    }
  }
#pragma unroll
  for (int h = 0; h < kGroup; ++h) {
#pragma unroll
    for (int k = 0; k < kChunksPerLane; ++k) {
      float* dst = part_acc + (pi * kGroup + h) * kHeadDim + (k * kTpt + c) * kChunkElems;
#pragma unroll
      for (int e = 0; e < kChunkElems; e += 4) {
        const float* a = &acc[h][k * kChunkElems + e];
        *reinterpret_cast<float4*>(dst + e) = make_float4(a[0], a[1], a[2], a[3]);
      }
    }
  }
  __syncthreads();

  const int64_t o_stride = p.o_stride ? p.o_stride : int64_t{p.group} * kHeadDim;
  for (int idx = tid; idx < nh * kHeadDim; idx += kThreads) {
    const int h = idx / kHeadDim, d = idx % kHeadDim;
    float mm = -INFINITY;
#pragma unroll 8
    for (int w = 0; w < S::kParts; ++w) mm = fmaxf(mm, part_m[w * kGroup + h]);
    float out = 0.0f, lse = -INFINITY;
    if (mm != -INFINITY) {
      float ll = 0.0f, aa = 0.0f;
#pragma unroll 8
      for (int w = 0; w < S::kParts; ++w) {
        const float sc = exp2f(part_m[w * kGroup + h] - mm);  // 0 for empty parts
        ll = fmaf(sc, part_l[w * kGroup + h], ll);
        aa = fmaf(sc, part_acc[(w * kGroup + h) * kHeadDim + d], aa);
      }
      out = aa / ll;
      lse = (mm + log2f(ll)) * kLn2;
    }
    const int hh = head0 + h;
    if (p.num_splits > 1) {
      const int64_t row = (int64_t{item} * p.num_splits + split) * p.group + hh;
      p.workspace_o[row * kHeadDim + d] = out;
      if (d == 0) p.workspace_lse[row] = lse;
    } else {
      p.o[item * o_stride + int64_t{hh} * kHeadDim + d] = out;
      if (d == 0) p.lse[int64_t{item} * p.group + hh] = lse;
    }
  }
}

template <typename KvT, int kHeadDim, int kGroup>
cudaError_t Launch(const PagedDecodeParams<KvT>& p, const FastDiv& page_div, cudaStream_t stream) {
  using S = Shape<KvT, kHeadDim, kGroup>;
  auto* kernel = PagedDecodeKernel<KvT, kHeadDim, kGroup>;
  // Once per kernel and device (the first launch, outside any graph capture): opt in above 48 KB
  // of dynamic shared memory, and ask for the largest shared-memory carveout so that kMinBlocks
  // rings fit an SM (L1 is not needed: K/V bypass it through cp.async.cg). Racing threads only
  // set the same attributes twice.
  static std::atomic<uint64_t> configured{0};  // bit per device id < 64
  int dev = 0;
  cudaError_t err = cudaGetDevice(&dev);
  if (err != cudaSuccess) return err;
  const uint64_t bit = dev < 64 ? uint64_t{1} << dev : 0;
  if (bit == 0 || (configured.load(std::memory_order_relaxed) & bit) == 0) {
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               static_cast<int>(S::kSmemBytes));
    if (err == cudaSuccess) {
      err = cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                 cudaSharedmemCarveoutMaxShared);
    }
    if (err != cudaSuccess) return err;
    configured.fetch_or(bit, std::memory_order_relaxed);
  }
  const dim3 grid(p.num_items, p.num_splits, (p.group + kGroup - 1) / kGroup);
  kernel<<<grid, kThreads, S::kSmemBytes, stream>>>(p, page_div);
  return cudaGetLastError();
}

template <typename KvT, int kHeadDim>
cudaError_t DispatchGroup(const PagedDecodeParams<KvT>& p, const FastDiv& page_div,
                          cudaStream_t stream) {
  if (p.group == 1) return Launch<KvT, kHeadDim, 1>(p, page_div, stream);
  if (p.group == 2) return Launch<KvT, kHeadDim, 2>(p, page_div, stream);
  if (p.group <= 4) return Launch<KvT, kHeadDim, 4>(p, page_div, stream);
  return Launch<KvT, kHeadDim, kMaxGroup>(p, page_div, stream);
}

}  // namespace

PagedDecodePlan PlanPagedDecode(int32_t num_items, int32_t group, int32_t head_dim,
                                int32_t max_kv_len, int32_t num_sms) {
  PagedDecodePlan plan;
  // Ranges up to kNoSplit tokens take one CTA a couple of memory round trips: never split them.
  // Longer ones split into chunks of at least kMinChunk tokens (2 warp tiles per warp), below
  // which merge traffic and fixed per-CTA work outweigh the parallelism.
  constexpr int32_t kNoSplit = 128;
  constexpr int32_t kMinChunk = 64;
  if (num_items <= 0 || group < 1 || max_kv_len <= kNoSplit) return plan;
  const int64_t ctas = int64_t{num_items} * ((group + kMaxGroup - 1) / kMaxGroup);
  const int64_t slots = int64_t{std::max(num_sms, 1)} * CtasPerSm(group);
  // A full wave already has enough bytes in flight on every SM, and the CTAs of a partial last
  // wave run alone on their SMs at close to full speed, so only a grid under one wave splits.
  if (ctas >= slots) return plan;
  // The most splits that still fit one wave: every SM gets its CTAs and the merge stays small.
  const int64_t max_splits =
      std::min<int64_t>(256, (int64_t{max_kv_len} + kMinChunk - 1) / kMinChunk);
  const int64_t want = std::min<int64_t>(max_splits, slots / ctas);
  if (want <= 1) return plan;
  const int64_t chunk = (int64_t{max_kv_len} + want - 1) / want;
  const int64_t splits = (max_kv_len + chunk - 1) / chunk;
  if (splits <= 1) return plan;
  plan.kv_chunk_size = static_cast<int32_t>(chunk);
  plan.num_splits = static_cast<int32_t>(splits);
  plan.workspace_o_elems = int64_t{num_items} * plan.num_splits * group * head_dim;
  plan.workspace_lse_elems = int64_t{num_items} * plan.num_splits * group;
  return plan;
}

template <typename KvT>
cudaError_t InvokePagedDecode(const PagedDecodeParams<KvT>& p, cudaStream_t stream) {
  if (p.num_items < 0 || p.group < 1 || p.block_size < 1 || p.num_splits < 1 ||
      p.num_splits > 65535 || (p.num_splits > 1 && p.kv_chunk_size < 1)) {
    return cudaErrorInvalidValue;
  }
  if (p.num_items == 0) return cudaSuccess;
  const int64_t group_chunks = (p.group + kMaxGroup - 1) / kMaxGroup;
  if (group_chunks > 65535) return cudaErrorInvalidValue;
  if (!IsAligned16(p.k_pool) || !IsAligned16(p.v_pool) || !IsAligned16(p.q) ||
      p.q_stride % 4 != 0) {
    return cudaErrorInvalidValue;
  }
  if (p.num_splits > 1 && (p.workspace_o == nullptr || p.workspace_lse == nullptr)) {
    return cudaErrorInvalidValue;
  }
  const FastDiv page_div(static_cast<uint32_t>(p.block_size));
  cudaError_t err;
  switch (p.head_dim) {
    case 8:  // tiny test models (stories260K)
      err = DispatchGroup<KvT, 8>(p, page_div, stream);
      break;
    case 32:
      err = DispatchGroup<KvT, 32>(p, page_div, stream);
      break;
    case 64:
      err = DispatchGroup<KvT, 64>(p, page_div, stream);
      break;
    case 128:
      err = DispatchGroup<KvT, 128>(p, page_div, stream);
      break;
    case 256:
      err = DispatchGroup<KvT, 256>(p, page_div, stream);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  if (err != cudaSuccess || p.num_splits == 1) return err;
  MergeAttentionParams mp;
  mp.o_parts = p.workspace_o;
  mp.lse_parts = p.workspace_lse;
  mp.count = p.num_items;
  mp.n_parts = p.num_splits;
  mp.rows = p.group;
  mp.head_dim = p.head_dim;
  mp.out = p.o;
  mp.out_stride = p.o_stride ? p.o_stride : int64_t{p.group} * p.head_dim;
  mp.out_lse = p.lse;
  mp.programmatic_launch = true;  // overlaps its launch with the tail of the decode kernel
  return InvokeMergeAttention(mp, stream);
}

template cudaError_t InvokePagedDecode<float>(const PagedDecodeParams<float>&, cudaStream_t);
template cudaError_t InvokePagedDecode<__nv_bfloat16>(const PagedDecodeParams<__nv_bfloat16>&,
                                                      cudaStream_t);

}  // namespace kvasir::cuda

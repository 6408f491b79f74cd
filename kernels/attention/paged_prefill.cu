#include <algorithm>
#include <cmath>

#include "kernels/attention/paged_prefill.cuh"
#include "kernels/common/vec.cuh"

namespace kvasir::cuda {
namespace {

// CTA shape. 256 threads = kTy × kTx: a thread owns kM / kTy query slots (rows of the CTA's Q
// tile) and, along the other axis, kN / kTx tokens of the score tile and head_dim / kTx output
// columns. The kTx threads of a slot are consecutive lanes of one warp, so row reductions are
// three shuffles.
constexpr int kThreads = 256;
constexpr int kTx = 8;
constexpr int kTy = kThreads / kTx;
constexpr int kN = 32;  // tokens per K/V tile
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// Shared memory of one CTA, all fp32 (KV is converted once when the tile is stored):
//   q [kM][D + 4]  pre-scaled queries of the CTA's slots
//   k [kN][D + 4]  K tile
//   v [kN][D]      V tile
//   p [kM][kN + 4] probabilities of the tile
// The +4 pads keep the 16-byte reads of 8 consecutive rows (one quarter-warp) in distinct banks.
template <int kHeadDim, int kM>
struct Smem {
  static constexpr int kQkStride = kHeadDim + 4;
  static constexpr int kPStride = kN + 4;
  static constexpr int kQ = kM * kQkStride;
  static constexpr int kK = kN * kQkStride;
  static constexpr int kV = kN * kHeadDim;
  static constexpr int kP = kM * kPStride;
  static constexpr size_t kBytes = sizeof(float) * (kQ + kK + kV + kP);
};

// How a CTA's kM query slots are cut: slot s holds (row s / heads, head s % heads) of a tile of
// rows_per_tile rows and `heads` query heads of one kv head (heads < group only when group > kM:
// then head chunks of the same kv head go to separate CTAs).
struct Tiling {
  int32_t heads_per_cta = 1;
  int32_t head_chunks = 1;
  int32_t rows_per_tile = 1;
  int64_t q_row_stride = 0;
  int64_t o_row_stride = 0;
};

template <typename KvT>
__device__ __forceinline__ void StoreChunk(float* dst, const uint4& raw);
template <>
__device__ __forceinline__ void StoreChunk<float>(float* dst, const uint4& raw) {
  *reinterpret_cast<uint4*>(dst) = raw;
}
template <>
__device__ __forceinline__ void StoreChunk<__nv_bfloat16>(float* dst, const uint4& raw) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
  float f[8];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const float2 x = __bfloat1622float2(h[j]);
    f[2 * j] = x.x;
    f[2 * j + 1] = x.y;
  }
  reinterpret_cast<float4*>(dst)[0] = make_float4(f[0], f[1], f[2], f[3]);
  reinterpret_cast<float4*>(dst)[1] = make_float4(f[4], f[5], f[6], f[7]);
}

// Stages one K/V tile in registers (16-byte global loads, consecutive threads along a row) so
// that the next tile's loads are in flight while the current one is computed.
template <typename KvT, int kHeadDim>
struct TileLoader {
  static constexpr int kChunk = kVec16<KvT>;               // elements per 16-byte load
  static constexpr int kChunksPerRow = kHeadDim / kChunk;  // >= 1 for every supported head_dim
  static constexpr int kTileChunks = kN * kChunksPerRow;
  static constexpr int kIters = (kTileChunks + kThreads - 1) / kThreads;
  static_assert(kHeadDim % kChunk == 0);

  uint4 k[kIters];
  uint4 v[kIters];

  __device__ __forceinline__ void Fetch(const PagedPrefillParams<KvT>& p, const int32_t* table,
                                        int32_t t0, int32_t end) {
#pragma unroll
    for (int it = 0; it < kIters; ++it) {
      const int idx = it * kThreads + static_cast<int>(threadIdx.x);
      k[it] = v[it] = make_uint4(0u, 0u, 0u, 0u);
      if (kTileChunks % kThreads != 0 && idx >= kTileChunks) continue;
      const int32_t t = t0 + idx / kChunksPerRow;
      if (t >= end) continue;
      const int64_t row = int64_t{table[t / p.block_size]} * p.block_size + t % p.block_size;
      const int64_t off = row * kHeadDim + (idx % kChunksPerRow) * kChunk;
      k[it] = __ldg(reinterpret_cast<const uint4*>(p.k_pool + off));
      v[it] = __ldg(reinterpret_cast<const uint4*>(p.v_pool + off));
    }
  }

  __device__ __forceinline__ void Store(float* ks, float* vs) const {
    constexpr int kKStride = kHeadDim + 4;
#pragma unroll
    for (int it = 0; it < kIters; ++it) {
      const int idx = it * kThreads + static_cast<int>(threadIdx.x);
      if (kTileChunks % kThreads != 0 && idx >= kTileChunks) continue;
      const int n = idx / kChunksPerRow;
      const int e = (idx % kChunksPerRow) * kChunk;
      StoreChunk<KvT>(ks + n * kKStride + e, k[it]);
      StoreChunk<KvT>(vs + n * kHeadDim + e, v[it]);
    }
  }
};

// One CTA per (row tile, kv head × head chunk, sequence). Every K/V tile of the tile's causal
// prefix [0, pos0 + last row + 1) is loaded once into shared memory and serves all kM query
// slots: S = Q Kᵀ (thread: kRm slots × kCn tokens), causal mask, online softmax in log2 units,
// P to shared memory, O += P V (thread: kRm slots × head_dim / kTx columns).
template <typename KvT, int kHeadDim, int kM>
__global__ void __launch_bounds__(kThreads, 2)
    PagedPrefillKernel(const PagedPrefillParams<KvT> p, const Tiling tiling) {
  using S = Smem<kHeadDim, kM>;
  constexpr int kRm = kM / kTy;                                 // slots per thread
  constexpr int kCn = kN / kTx;                                 // tokens per thread in S
  constexpr int kVd = kHeadDim / kTx < 4 ? kHeadDim / kTx : 4;  // output vector width
  constexpr int kCd = kHeadDim / (kTx * kVd);                   // output vectors per slot
  static_assert(kRm >= 1 && kM % kTy == 0 && kN % (4 * kTx) == 0 && kHeadDim % 4 == 0);
  static_assert(kVd == 1 || kVd == 4);

  extern __shared__ float4 smem4[];
  float* qs = reinterpret_cast<float*>(smem4);
  float* ks = qs + S::kQ;
  float* vs = ks + S::kK;
  float* ps = vs + S::kV;

  const int seq = blockIdx.z;
  const int kvh = blockIdx.y / tiling.head_chunks;
  const int head0 = (blockIdx.y % tiling.head_chunks) * tiling.heads_per_cta;
  const int nh = min(tiling.heads_per_cta, p.group - head0);
  const int32_t row_begin = p.row_start[seq];
  const int32_t n_rows = p.row_start[seq + 1] - row_begin;
  const int32_t r0 = static_cast<int32_t>(blockIdx.x) * tiling.rows_per_tile;
  if (r0 >= n_rows) return;  // uniform over the CTA
  const int32_t tile_rows = min(tiling.rows_per_tile, n_rows - r0);
  const int32_t pos0 = p.pos0[seq];
  const int32_t cap = p.kv_limit != nullptr ? p.kv_limit[seq] : INT32_MAX;
  const int32_t kv_end = min(pos0 + r0 + tile_rows, cap);  // causal end of the tile's last row
  const int32_t* table = p.block_ids + p.block_table_offsets[int64_t{seq} * p.num_kv_heads + kvh];
  const int32_t hq0 = kvh * p.group + head0;  // first query head of the CTA

  TileLoader<KvT, kHeadDim> loader;
  loader.Fetch(p, table, 0, kv_end);

  // Q tile, pre-scaled so that scores are in log2 units; empty slots are zero.
  const float qscale = p.scale * kLog2e;
  for (int idx = threadIdx.x; idx < kM * (kHeadDim / 4); idx += kThreads) {
    const int s = idx / (kHeadDim / 4);
    const int e = (idx % (kHeadDim / 4)) * 4;
    const int r = s / nh, h = s % nh;
    float4 x = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (r < tile_rows) {
      x = *reinterpret_cast<const float4*>(p.q + (row_begin + r0 + r) * tiling.q_row_stride +
                                           int64_t{hq0 + h} * kHeadDim + e);
      x.x *= qscale;
      x.y *= qscale;
      x.z *= qscale;
      x.w *= qscale;
    }
    *reinterpret_cast<float4*>(qs + s * S::kQkStride + e) = x;
  }

  const int tx = threadIdx.x % kTx;
  const int ty = threadIdx.x / kTx;
  // Causal limit of each of the thread's slots: tokens t < limit are visible. Empty slots see
  // the whole tile range, so no slot is ever fully masked (token 0 is visible to every row).
  int32_t limit[kRm];
#pragma unroll
  for (int i = 0; i < kRm; ++i) {
    const int r = (ty * kRm + i) / nh;
    limit[i] = r < tile_rows ? min(pos0 + r0 + r + 1, cap) : kv_end;
  }

  float acc[kRm][kCd][kVd];
  float m[kRm], l[kRm];  // running max (log2 units) and this thread's partial sum
#pragma unroll
  for (int i = 0; i < kRm; ++i) {
    m[i] = -INFINITY;
    l[i] = 0.0f;
#pragma unroll
    for (int c = 0; c < kCd; ++c) {
#pragma unroll
      for (int e = 0; e < kVd; ++e) acc[i][c][e] = 0.0f;
    }
  }

  for (int32_t t0 = 0; t0 < kv_end; t0 += kN) {
    loader.Store(ks, vs);
    __syncthreads();  // tile (and, the first time, Q) visible
    if (t0 + kN < kv_end) loader.Fetch(p, table, t0 + kN, kv_end);

    // S = Q Kᵀ for slots ty * kRm + i and tokens tx + kTx * j (8 rows per quarter-warp).
    float s[kRm][kCn];
#pragma unroll
    for (int i = 0; i < kRm; ++i) {
#pragma unroll
      for (int j = 0; j < kCn; ++j) s[i][j] = 0.0f;
    }
#pragma unroll 4
    for (int d = 0; d < kHeadDim; d += 4) {
      float4 qv[kRm], kv[kCn];
#pragma unroll
      for (int i = 0; i < kRm; ++i) {
        qv[i] = *reinterpret_cast<const float4*>(qs + (ty * kRm + i) * S::kQkStride + d);
      }
#pragma unroll
      for (int j = 0; j < kCn; ++j) {
        kv[j] = *reinterpret_cast<const float4*>(ks + (tx + kTx * j) * S::kQkStride + d);
      }
#pragma unroll
      for (int i = 0; i < kRm; ++i) {
#pragma unroll
        for (int j = 0; j < kCn; ++j) {
          s[i][j] = fmaf(qv[i].x, kv[j].x, s[i][j]);
          s[i][j] = fmaf(qv[i].y, kv[j].y, s[i][j]);
          s[i][j] = fmaf(qv[i].z, kv[j].z, s[i][j]);
          s[i][j] = fmaf(qv[i].w, kv[j].w, s[i][j]);
        }
      }
    }

    // Causal mask and online softmax; tokens past kv_end were never loaded (zeros) and are
    // masked too, since every limit is <= kv_end.
#pragma unroll
    for (int i = 0; i < kRm; ++i) {
      float mt = -INFINITY;
#pragma unroll
      for (int j = 0; j < kCn; ++j) {
        if (t0 + tx + kTx * j >= limit[i]) s[i][j] = -INFINITY;
        mt = fmaxf(mt, s[i][j]);
      }
#pragma unroll
      for (int off = 1; off < kTx; off *= 2) mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, off));
      const float m_new = fmaxf(m[i], mt);
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;
      const float corr = exp2f(m[i] - m_use);  // 0 while m is −inf
      m[i] = m_new;
      float sum = 0.0f;
#pragma unroll
      for (int j = 0; j < kCn; ++j) {
        const float pw = exp2f(s[i][j] - m_use);
        sum += pw;
        ps[(ty * kRm + i) * S::kPStride + tx + kTx * j] = pw;
      }
      l[i] = fmaf(l[i], corr, sum);
#pragma unroll
      for (int c = 0; c < kCd; ++c) {
#pragma unroll
        for (int e = 0; e < kVd; ++e) acc[i][c][e] *= corr;
      }
    }
    __syncthreads();  // P visible

    // O += P V for columns c * kTx * kVd + tx * kVd + e.
#pragma unroll 2
    for (int n = 0; n < kN; n += 4) {
      float4 pv[kRm];
#pragma unroll
      for (int i = 0; i < kRm; ++i) {
        pv[i] = *reinterpret_cast<const float4*>(ps + (ty * kRm + i) * S::kPStride + n);
      }
#pragma unroll
      for (int nn = 0; nn < 4; ++nn) {
        const float* vrow = vs + (n + nn) * kHeadDim + tx * kVd;
#pragma unroll
        for (int c = 0; c < kCd; ++c) {
          float v[kVd];
          if constexpr (kVd == 4) {
            const float4 x = *reinterpret_cast<const float4*>(vrow + c * kTx * kVd);
            v[0] = x.x;
            v[1] = x.y;
            v[2] = x.z;
            v[3] = x.w;
          } else {
            v[0] = vrow[c * kTx];
          }
#pragma unroll
          for (int i = 0; i < kRm; ++i) {
            const float w = nn == 0 ? pv[i].x : nn == 1 ? pv[i].y : nn == 2 ? pv[i].z : pv[i].w;
#pragma unroll
            for (int e = 0; e < kVd; ++e) acc[i][c][e] = fmaf(w, v[e], acc[i][c][e]);
          }
        }
      }
    }
    __syncthreads();  // K, V and P free for the next tile
  }

  // Sum the partial l over the slot's kTx lanes, normalize and write.
#pragma unroll
  for (int i = 0; i < kRm; ++i) {
    float li = l[i];
#pragma unroll
    for (int off = 1; off < kTx; off *= 2) li += __shfl_xor_sync(0xffffffffu, li, off);
    const int slot = ty * kRm + i;
    const int r = slot / nh, h = slot % nh;
    if (r >= tile_rows) continue;
    const int64_t row = row_begin + r0 + r;
    const int32_t hq = hq0 + h;
    // A row that saw nothing (kv_limit 0) gets o = 0 and lse = -inf, as an empty decode range.
    const float inv = li > 0.0f ? 1.0f / li : 0.0f;
    float* out = p.o + row * tiling.o_row_stride + int64_t{hq} * kHeadDim + tx * kVd;
#pragma unroll
    for (int c = 0; c < kCd; ++c) {
      if constexpr (kVd == 4) {
        *reinterpret_cast<float4*>(out + c * kTx * kVd) = make_float4(
            acc[i][c][0] * inv, acc[i][c][1] * inv, acc[i][c][2] * inv, acc[i][c][3] * inv);
      } else {
        out[c * kTx] = acc[i][c][0] * inv;
      }
    }
    if (p.lse != nullptr && tx == 0) {
      p.lse[row * (int64_t{p.num_kv_heads} * p.group) + hq] =
          li > 0.0f ? (m[i] + log2f(li)) * kLn2 : -INFINITY;
    }
  }
}

template <typename KvT, int kHeadDim, int kM>
cudaError_t Launch(const PagedPrefillParams<KvT>& p, cudaStream_t stream) {
  const int64_t heads = int64_t{p.num_kv_heads} * p.group;
  Tiling t;
  t.heads_per_cta = std::min(p.group, kM);
  t.head_chunks = (p.group + t.heads_per_cta - 1) / t.heads_per_cta;
  t.rows_per_tile = kM / t.heads_per_cta;
  t.q_row_stride = p.q_row_stride ? p.q_row_stride : heads * kHeadDim;
  t.o_row_stride = p.o_row_stride ? p.o_row_stride : heads * kHeadDim;
  const int64_t grid_y = int64_t{p.num_kv_heads} * t.head_chunks;
  if (grid_y > 65535 || p.num_seqs > 65535) return cudaErrorInvalidValue;
  const int64_t grid_x = (int64_t{p.max_rows} + t.rows_per_tile - 1) / t.rows_per_tile;
  const dim3 grid(static_cast<unsigned>(grid_x), static_cast<unsigned>(grid_y),
                  static_cast<unsigned>(p.num_seqs));
  constexpr size_t kBytes = Smem<kHeadDim, kM>::kBytes;
  auto* kernel = &PagedPrefillKernel<KvT, kHeadDim, kM>;
  if (kBytes > 48 * 1024) {
    const cudaError_t err = cudaFuncSetAttribute(
        kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kBytes));
    if (err != cudaSuccess) return err;
  }
  kernel<<<grid, kThreads, kBytes, stream>>>(p, t);
  return cudaGetLastError();
}

// 64 query slots per CTA, or 32 when the step's rows × heads fit in 32 (decode-like steps waste
// fewer slots) and for head_dim 256 (shared memory).
template <typename KvT, int kHeadDim>
cudaError_t DispatchSlots(const PagedPrefillParams<KvT>& p, cudaStream_t stream) {
  if constexpr (kHeadDim == 256) {
    return Launch<KvT, kHeadDim, 32>(p, stream);
  } else {
    if (int64_t{p.max_rows} * p.group <= 32) return Launch<KvT, kHeadDim, 32>(p, stream);
    return Launch<KvT, kHeadDim, 64>(p, stream);
  }
}

bool Aligned4(int64_t stride) { return stride % 4 == 0; }

}  // namespace

template <typename KvT>
cudaError_t InvokePagedPrefill(const PagedPrefillParams<KvT>& p, cudaStream_t stream) {
  if (p.num_seqs < 0 || p.max_rows < 0 || p.num_kv_heads < 1 || p.group < 1 || p.block_size < 1) {
    return cudaErrorInvalidValue;
  }
  if (p.head_dim != 8 && p.head_dim != 32 && p.head_dim != 64 && p.head_dim != 128 &&
      p.head_dim != 256) {
    return cudaErrorInvalidValue;
  }
  if (p.num_seqs == 0 || p.max_rows == 0) return cudaSuccess;
  if (p.k_pool == nullptr || p.v_pool == nullptr || p.block_table_offsets == nullptr ||
      p.block_ids == nullptr || p.row_start == nullptr || p.pos0 == nullptr || p.q == nullptr ||
      p.o == nullptr) {
    return cudaErrorInvalidValue;
  }
  if (!IsAligned16(p.k_pool) || !IsAligned16(p.v_pool) || !IsAligned16(p.q) || !IsAligned16(p.o) ||
      p.q_row_stride < 0 || p.o_row_stride < 0 || !Aligned4(p.q_row_stride) ||
      !Aligned4(p.o_row_stride)) {
    return cudaErrorInvalidValue;
  }
  switch (p.head_dim) {
    case 8:  // tiny test models (stories260K)
      return DispatchSlots<KvT, 8>(p, stream);
    case 32:
      return DispatchSlots<KvT, 32>(p, stream);
    case 64:
      return DispatchSlots<KvT, 64>(p, stream);
    case 128:
      return DispatchSlots<KvT, 128>(p, stream);
    default:
      return DispatchSlots<KvT, 256>(p, stream);
  }
}

template cudaError_t InvokePagedPrefill<float>(const PagedPrefillParams<float>&, cudaStream_t);
template cudaError_t InvokePagedPrefill<__nv_bfloat16>(const PagedPrefillParams<__nv_bfloat16>&,
                                                       cudaStream_t);

}  // namespace kvasir::cuda

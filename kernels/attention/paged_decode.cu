#include <algorithm>
#include <cmath>

#include "kernels/attention/merge_attention.cuh"
#include "kernels/attention/paged_decode.cuh"
#include "kernels/common/vec.cuh"

namespace kvasir::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kMaxGroup = 8;  // query heads per CTA; larger groups use gridDim.z
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// Merges (m_b, l_b, acc_b) into (m_a, l_a, acc_a); m in log2 units, −inf when empty.
__device__ __forceinline__ void MergeScale(float m_a, float m_b, float* sa, float* sb) {
  const float m = fmaxf(m_a, m_b);
  if (m == -INFINITY) {
    *sa = 0.0f;
    *sb = 0.0f;
    return;
  }
  *sa = exp2f(m_a - m);
  *sb = exp2f(m_b - m);
}

// One CTA per (item, split, chunk of kMaxGroup query heads). The CTA's threads form lane groups
// of kTpt threads; a lane group owns one token at a time and each of its threads holds kVec
// consecutive elements of head_dim (16-byte loads, or wider for 256-wide heads), so one K/V row
// is read once for all of the group's query heads. Each lane group keeps an online softmax
// (m, l, acc) per head; lane groups are merged through warp shuffles, then shared memory.
template <typename KvT, int kHeadDim, int kGroup>
__global__ void __launch_bounds__(kThreads) PagedDecodeKernel(PagedDecodeParams<KvT> p) {
  constexpr int kVec = kVec16 < KvT >> kHeadDim / 32 ? kVec16<KvT> : kHeadDim / 32;
  constexpr int kTpt = kHeadDim / kVec;  // threads per token, <= 32, power of two
  constexpr int kLaneGroups = kThreads / kTpt;
  constexpr int kWarps = kThreads / 32;
  constexpr int kUnroll = 2;
  static_assert(kTpt <= 32 && 32 % kTpt == 0);

  __shared__ float sm_m[kWarps][kGroup];
  __shared__ float sm_l[kWarps][kGroup];
  __shared__ float sm_acc[kWarps][kGroup][kHeadDim];

  const int item = blockIdx.x;
  const int split = blockIdx.y;
  const int head0 = blockIdx.z * kGroup;
  const int nh = min(kGroup, p.group - head0);
  const int tid = threadIdx.x;
  const int lg = tid / kTpt;
  const int d0 = (tid % kTpt) * kVec;

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
  const int32_t* table = p.block_ids + p.block_table_offsets[item];
  const int64_t q_stride = p.q_stride ? p.q_stride : int64_t{p.group} * kHeadDim;

  // q pre-scaled so that scores are in log2 units: exp(s) = exp2(s * log2 e).
  float q[kGroup][kVec];
  const float qscale = p.scale * kLog2e;
#pragma unroll
  for (int h = 0; h < kGroup; ++h) {
    if (h < nh) {
      LoadVec(p.q + item * q_stride + int64_t{head0 + h} * kHeadDim + d0, q[h]);
#pragma unroll
      for (int i = 0; i < kVec; ++i) q[h][i] *= qscale;
    } else {
#pragma unroll
      for (int i = 0; i < kVec; ++i) q[h][i] = 0.0f;
    }
  }

  float m[kGroup], l[kGroup], acc[kGroup][kVec];
#pragma unroll
  for (int h = 0; h < kGroup; ++h) {
    m[h] = -INFINITY;
    l[h] = 0.0f;
#pragma unroll
    for (int i = 0; i < kVec; ++i) acc[h][i] = 0.0f;
  }

  // Every thread runs the same trip count (shuffles below need the whole warp).
  for (int32_t base = cb; base < ce; base += kLaneGroups * kUnroll) {
    float k[kUnroll][kVec], v[kUnroll][kVec];
    bool valid[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int32_t t = base + u * kLaneGroups + lg;
      valid[u] = t < ce;
      if (valid[u]) {
        const int64_t row = int64_t{table[t / p.block_size]} * p.block_size + t % p.block_size;
        LoadVec(p.k_pool + row * kHeadDim + d0, k[u]);
        LoadVec(p.v_pool + row * kHeadDim + d0, v[u]);
      } else {
#pragma unroll
        for (int i = 0; i < kVec; ++i) k[u][i] = v[u][i] = 0.0f;
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
      for (int h = 0; h < kGroup; ++h) {
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < kVec; ++i) s = fmaf(q[h][i], k[u][i], s);
#pragma unroll
        for (int off = kTpt / 2; off > 0; off /= 2) s += __shfl_xor_sync(0xffffffffu, s, off);
        if (valid[u] && h < nh) {
          const float m_new = fmaxf(m[h], s);
          const float corr = exp2f(m[h] - m_new);  // 0 while m is −inf
          const float pw = exp2f(s - m_new);
          l[h] = l[h] * corr + pw;
#pragma unroll
          for (int i = 0; i < kVec; ++i) acc[h][i] = fmaf(acc[h][i], corr, pw * v[u][i]);
          m[h] = m_new;
        }
      }
    }
  }

  // Merge the lane groups of each warp (lanes tid % kTpt equal hold the same d0).
#pragma unroll
  for (int off = kTpt; off < 32; off *= 2) {
#pragma unroll
    for (int h = 0; h < kGroup; ++h) {
      const float m_o = __shfl_xor_sync(0xffffffffu, m[h], off);
      const float l_o = __shfl_xor_sync(0xffffffffu, l[h], off);
      float sa, sb;
      MergeScale(m[h], m_o, &sa, &sb);
      l[h] = l[h] * sa + l_o * sb;
#pragma unroll
      for (int i = 0; i < kVec; ++i) {
        const float a_o = __shfl_xor_sync(0xffffffffu, acc[h][i], off);
        acc[h][i] = acc[h][i] * sa + a_o * sb;
      }
      m[h] = fmaxf(m[h], m_o);
    }
  }
  const int warp = tid / 32, lane = tid % 32;
  if (lane < kTpt) {
#pragma unroll
    for (int h = 0; h < kGroup; ++h) {
      if (lane == 0) {
        sm_m[warp][h] = m[h];
        sm_l[warp][h] = l[h];
      }
#pragma unroll
      for (int i = 0; i < kVec; ++i) sm_acc[warp][h][d0 + i] = acc[h][i];
    }
  }
  __syncthreads();

  // Merge the warps; thread per (head, dim).
  const int64_t o_stride = p.o_stride ? p.o_stride : int64_t{p.group} * kHeadDim;
  for (int idx = tid; idx < nh * kHeadDim; idx += kThreads) {
    const int h = idx / kHeadDim, d = idx % kHeadDim;
    float mm = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) mm = fmaxf(mm, sm_m[w][h]);
    float out = 0.0f, lse = -INFINITY;
    if (mm != -INFINITY) {
      float ll = 0.0f, aa = 0.0f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) {
        const float s = exp2f(sm_m[w][h] - mm);  // 0 for empty warps
        ll += s * sm_l[w][h];
        aa += s * sm_acc[w][h][d];
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
cudaError_t Launch(const PagedDecodeParams<KvT>& p, cudaStream_t stream) {
  const dim3 grid(p.num_items, p.num_splits, (p.group + kGroup - 1) / kGroup);
  PagedDecodeKernel<KvT, kHeadDim, kGroup><<<grid, kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

template <typename KvT, int kHeadDim>
cudaError_t DispatchGroup(const PagedDecodeParams<KvT>& p, cudaStream_t stream) {
  if (p.group == 1) return Launch<KvT, kHeadDim, 1>(p, stream);
  if (p.group == 2) return Launch<KvT, kHeadDim, 2>(p, stream);
  if (p.group <= 4) return Launch<KvT, kHeadDim, 4>(p, stream);
  return Launch<KvT, kHeadDim, kMaxGroup>(p, stream);
}

}  // namespace

PagedDecodePlan PlanPagedDecode(int32_t num_items, int32_t group, int32_t head_dim,
                                int32_t max_kv_len, int32_t num_sms) {
  PagedDecodePlan plan;
  const int64_t ctas = int64_t{num_items} * ((group + kMaxGroup - 1) / kMaxGroup);
  const int64_t target = 4 * int64_t{std::max(num_sms, 1)};
  constexpr int32_t kMinChunk = 256;
  if (num_items <= 0 || ctas >= target || max_kv_len <= 2 * kMinChunk) return plan;
  int64_t splits =
      std::min<int64_t>((target + ctas - 1) / ctas, (max_kv_len + kMinChunk - 1) / kMinChunk);
  splits = std::min<int64_t>(splits, 256);
  if (splits <= 1) return plan;
  const int32_t chunk = static_cast<int32_t>((max_kv_len + splits - 1) / splits);
  plan.kv_chunk_size = chunk;
  plan.num_splits = static_cast<int32_t>((max_kv_len + chunk - 1) / chunk);
  if (plan.num_splits <= 1) return PagedDecodePlan{};
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
  cudaError_t err;
  switch (p.head_dim) {
    case 8:  // tiny test models (stories260K)
      err = DispatchGroup<KvT, 8>(p, stream);
      break;
    case 32:
      err = DispatchGroup<KvT, 32>(p, stream);
      break;
    case 64:
      err = DispatchGroup<KvT, 64>(p, stream);
      break;
    case 128:
      err = DispatchGroup<KvT, 128>(p, stream);
      break;
    case 256:
      err = DispatchGroup<KvT, 256>(p, stream);
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
  return InvokeMergeAttention(mp, stream);
}

template cudaError_t InvokePagedDecode<float>(const PagedDecodeParams<float>&, cudaStream_t);
template cudaError_t InvokePagedDecode<__nv_bfloat16>(const PagedDecodeParams<__nv_bfloat16>&,
                                                      cudaStream_t);

}  // namespace kvasir::cuda

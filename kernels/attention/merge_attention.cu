#include <cmath>

#include "kernels/attention/merge_attention.cuh"
#include "kernels/common/reduce.cuh"

namespace kvasir::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kStaged = 1024;  // parts whose lse/weight is staged in shared memory

template <int kW>
struct VecOf;
template <>
struct VecOf<4> {
  using T = float4;
};
template <>
struct VecOf<1> {
  using T = float;
};

__device__ __forceinline__ void Fma(float w, const float4& o, float (&acc)[4]) {
  acc[0] = fmaf(w, o.x, acc[0]);
  acc[1] = fmaf(w, o.y, acc[1]);
  acc[2] = fmaf(w, o.z, acc[2]);
  acc[3] = fmaf(w, o.w, acc[3]);
}
__device__ __forceinline__ void Fma(float w, float o, float (&acc)[1]) {
  acc[0] = fmaf(w, o, acc[0]);
}

__device__ __forceinline__ float BlockMax(float x, float* scratch) {
#pragma unroll
  for (int off = 16; off > 0; off /= 2) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, off));
  __syncthreads();  // scratch may still be read by a previous reduction
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = x;
  __syncthreads();
  x = scratch[0];
#pragma unroll
  for (int w = 1; w < kThreads / 32; ++w) x = fmaxf(x, scratch[w]);
  return x;
}

__device__ __forceinline__ float BlockSumOf(float x, float* scratch) {
  x = WarpSum(x);
  __syncthreads();
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = x;
  __syncthreads();
  x = 0.0f;
#pragma unroll
  for (int w = 0; w < kThreads / 32; ++w) x += scratch[w];
  return x;
}

// One CTA per (group, row). The lse of the parts is read once into shared memory (up to
// kStaged parts; the rare rest is re-read), turned into weights e^{lse_j − M}, and the threads,
// as (slice, vector of kW dims), each sum every slices-th part with independent loads in flight,
// so a long split-KV merges in a couple of memory round trips instead of one per part. Slices are
// summed through shared memory.
template <int kW>
__global__ void __launch_bounds__(kThreads) MergeAttentionKernel(MergeAttentionParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // No-op unless launched as a programmatic dependent: then wait for the producer grid.
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
  using VecT = typename VecOf<kW>::T;
  __shared__ float scratch[kThreads / 32];
  __shared__ float weight[kStaged];
  __shared__ float partial[kThreads * kW];

  const int64_t g = blockIdx.x / p.rows;
  const int32_t r = blockIdx.x % p.rows;
  const int tid = threadIdx.x;
  const int32_t n = p.n_parts;
  const int64_t out_stride = p.out_stride ? p.out_stride : int64_t{p.rows} * p.head_dim;
  const float* lse = p.lse_parts + g * n * p.rows + r;  // stride rows between parts
  float* out = p.out + g * out_stride + int64_t{r} * p.head_dim;

  float m = -INFINITY;
  for (int32_t j = tid; j < n; j += kThreads) {
    const float l = lse[int64_t{j} * p.rows];
    if (j < kStaged) weight[j] = l;
    m = fmaxf(m, l);
  }
  m = BlockMax(m, scratch);  // its barriers also publish weight[]
  if (m == -INFINITY) {
    for (int32_t i = tid; i < p.head_dim; i += kThreads) out[i] = 0.0f;
    if (p.out_lse && tid == 0) p.out_lse[g * p.rows + r] = -INFINITY;
    return;
  }
  auto weight_of = [&](float l) { return l == -INFINITY ? 0.0f : expf(l - m); };
  float denom = 0.0f;
  for (int32_t j = tid; j < n; j += kThreads) {
    const float w = weight_of(j < kStaged ? weight[j] : lse[int64_t{j} * p.rows]);
    if (j < kStaged) weight[j] = w;  // each thread rewrites only the entries it read
    denom += w;
  }
  denom = BlockSumOf(denom, scratch);  // its barriers also publish the weights
  const float inv = 1.0f / denom;

  const float* o = p.o_parts + (g * n * p.rows + r) * p.head_dim;
  const int64_t step = int64_t{p.rows} * p.head_dim / kW;  // vectors between parts
  const int32_t nvec = p.head_dim / kW;
  for (int32_t vbase = 0; vbase < nvec; vbase += kThreads) {
    const int nv = min(nvec - vbase, kThreads);
    const int slices = kThreads / nv;
    const int slice = tid / nv;
    const int32_t dv = vbase + tid % nv;
    float acc[kW];
#pragma unroll
    for (int e = 0; e < kW; ++e) acc[e] = 0.0f;
    if (slice < slices) {
      const VecT* src = reinterpret_cast<const VecT*>(o) + dv;
      const int32_t staged = min(n, kStaged);
#pragma unroll 8
      for (int32_t j = slice; j < staged; j += slices) Fma(weight[j], src[j * step], acc);
      for (int32_t j = kStaged + slice; j < n; j += slices) {
        Fma(weight_of(lse[int64_t{j} * p.rows]), src[j * step], acc);
      }
    }
    __syncthreads();  // partial may still be read by the previous pass
#pragma unroll
    for (int e = 0; e < kW; ++e) partial[tid * kW + e] = acc[e];
    __syncthreads();
    if (tid < nv) {
      float sum[kW];
#pragma unroll
      for (int e = 0; e < kW; ++e) sum[e] = 0.0f;
      for (int sl = 0; sl < slices; ++sl) {
#pragma unroll
        for (int e = 0; e < kW; ++e) sum[e] += partial[(sl * nv + tid) * kW + e];
      }
#pragma unroll
      for (int e = 0; e < kW; ++e) out[int64_t{dv} * kW + e] = sum[e] * inv;
    }
  }
  if (p.out_lse && tid == 0) p.out_lse[g * p.rows + r] = m + logf(denom);
}

}  // namespace

cudaError_t InvokeMergeAttention(const MergeAttentionParams& p, cudaStream_t stream) {
  if (p.count < 0 || p.n_parts < 0 || p.rows < 0 || p.head_dim <= 0) return cudaErrorInvalidValue;
  const int64_t blocks = p.count * p.rows;
  if (blocks == 0) return cudaSuccess;
  if (blocks > 0x7FFFFFFF) return cudaErrorInvalidValue;
  const int64_t out_stride = p.out_stride ? p.out_stride : int64_t{p.rows} * p.head_dim;
  const bool vec4 = p.head_dim % 4 == 0 && out_stride % 4 == 0 &&
                    (reinterpret_cast<uintptr_t>(p.o_parts) & 15u) == 0 &&
                    (reinterpret_cast<uintptr_t>(p.out) & 15u) == 0;
  void (*kernel)(MergeAttentionParams) = vec4 ? MergeAttentionKernel<4> : MergeAttentionKernel<1>;
  if (p.programmatic_launch) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(static_cast<unsigned>(blocks));
    cfg.blockDim = dim3(kThreads);
    cfg.dynamicSmemBytes = 0;
    cfg.stream = stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    if (cudaLaunchKernelEx(&cfg, kernel, p) == cudaSuccess) return cudaSuccess;
    (void)cudaGetLastError();  // not supported here: fall back to a plain launch
  }
  kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace kvasir::cuda

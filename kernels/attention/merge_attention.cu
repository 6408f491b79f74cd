#include <cmath>

#include "kernels/attention/merge_attention.cuh"

namespace kvasir::cuda {
namespace {

// One block per (group, row); threads stride over head_dim.
__global__ void MergeAttentionKernel(MergeAttentionParams p) {
  const int64_t g = blockIdx.x / p.rows;
  const int32_t r = blockIdx.x % p.rows;
  const int64_t out_stride = p.out_stride ? p.out_stride : int64_t{p.rows} * p.head_dim;
  const float* lse = p.lse_parts + g * p.n_parts * p.rows + r;  // stride rows between parts
  float m = -INFINITY;
  for (int32_t j = 0; j < p.n_parts; ++j) m = fmaxf(m, lse[int64_t{j} * p.rows]);
  float* out = p.out + g * out_stride + int64_t{r} * p.head_dim;
  if (m == -INFINITY) {
    for (int32_t i = threadIdx.x; i < p.head_dim; i += blockDim.x) out[i] = 0.0f;
    if (p.out_lse && threadIdx.x == 0) p.out_lse[g * p.rows + r] = -INFINITY;
    return;
  }
  float denom = 0.0f;
  for (int32_t j = 0; j < p.n_parts; ++j) {
    const float l = lse[int64_t{j} * p.rows];
    if (l != -INFINITY) denom += expf(l - m);
  }
  const float inv = 1.0f / denom;
  const float* o = p.o_parts + (g * p.n_parts * p.rows + r) * p.head_dim;
  const int64_t part_step = int64_t{p.rows} * p.head_dim;
  for (int32_t i = threadIdx.x; i < p.head_dim; i += blockDim.x) {
    float acc = 0.0f;
    for (int32_t j = 0; j < p.n_parts; ++j) {
      const float l = lse[int64_t{j} * p.rows];
      if (l != -INFINITY) acc += expf(l - m) * o[j * part_step + i];
    }
    out[i] = acc * inv;
  }
  if (p.out_lse && threadIdx.x == 0) p.out_lse[g * p.rows + r] = m + logf(denom);
}

}  // namespace

cudaError_t InvokeMergeAttention(const MergeAttentionParams& p, cudaStream_t stream) {
  if (p.count < 0 || p.n_parts < 0 || p.rows < 0 || p.head_dim <= 0) return cudaErrorInvalidValue;
  const int64_t blocks = p.count * p.rows;
  if (blocks == 0) return cudaSuccess;
  if (blocks > 0x7FFFFFFF) return cudaErrorInvalidValue;
  const int threads = p.head_dim >= 128 ? 128 : (p.head_dim >= 64 ? 64 : 32);
  MergeAttentionKernel<<<static_cast<unsigned>(blocks), threads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace kvasir::cuda

#include <algorithm>

#include "kernels/common/vec.cuh"
#include "kernels/rope/rope.cuh"

namespace kvasir::cuda {
namespace {

// One thread per (row, pair index i): one sincos serves every head of the row.
template <typename T>
__global__ void RopeKernel(RopeParams<T> p) {
  const int32_t half = p.head_dim / 2;
  const int64_t total = p.m * half;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = idx / half;
    const int32_t i = static_cast<int32_t>(idx % half);
    const float angle = static_cast<float>(p.positions[r]) * p.inv_freq[i];
    float s, c;
    sincosf(angle, &s, &c);
    const bool inter = p.layout == RopeLayout::kInterleaved;
    const int32_t a = inter ? 2 * i : i;
    const int32_t b = inter ? 2 * i + 1 : i + half;
    T* row = p.x + r * p.row_stride;
    for (int32_t h = 0; h < p.num_heads; ++h) {
      T* hp = row + int64_t{h} * p.head_dim;
      const float x0 = ToFloat(hp[a]), x1 = ToFloat(hp[b]);
      hp[a] = FromFloat<T>(x0 * c - x1 * s);
      hp[b] = FromFloat<T>(x0 * s + x1 * c);
    }
  }
}

}  // namespace

template <typename T>
cudaError_t InvokeRope(const RopeParams<T>& p, cudaStream_t stream) {
  if (p.m < 0 || p.num_heads < 0 || p.head_dim <= 0 || p.head_dim % 2 != 0) {
    return cudaErrorInvalidValue;
  }
  const int64_t total = p.m * (p.head_dim / 2);
  if (total == 0 || p.num_heads == 0) return cudaSuccess;
  constexpr int kThreads = 256;
  const int64_t blocks = std::min<int64_t>((total + kThreads - 1) / kThreads, 65536);
  RopeKernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

template cudaError_t InvokeRope<float>(const RopeParams<float>&, cudaStream_t);
template cudaError_t InvokeRope<__nv_bfloat16>(const RopeParams<__nv_bfloat16>&, cudaStream_t);

}  // namespace kvasir::cuda

#include <algorithm>

#include "runtime/cuda/cast.cuh"

namespace kvasir::cuda {
namespace {

constexpr int kThreads = 256;

template <typename SrcT, typename DstT>
__global__ void CastKernel(const SrcT* x, DstT* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    if constexpr (sizeof(DstT) == 2) {
      y[i] = __float2bfloat16_rn(x[i]);
    } else {
      y[i] = __bfloat162float(x[i]);
    }
  }
}

template <typename SrcT, typename DstT>
cudaError_t Launch(const SrcT* x, DstT* y, int64_t n, cudaStream_t stream) {
  if (n < 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  const int64_t blocks = std::min<int64_t>((n + kThreads - 1) / kThreads, 65535);
  CastKernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(x, y, n);
  return cudaGetLastError();
}

}  // namespace

cudaError_t InvokeCastToBf16(const float* x, __nv_bfloat16* y, int64_t n, cudaStream_t stream) {
  return Launch(x, y, n, stream);
}

cudaError_t InvokeCastToFloat(const __nv_bfloat16* x, float* y, int64_t n, cudaStream_t stream) {
  return Launch(x, y, n, stream);
}

}  // namespace kvasir::cuda

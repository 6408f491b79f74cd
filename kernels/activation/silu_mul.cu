#include <algorithm>

#include "kernels/activation/silu_mul.cuh"
#include "kernels/common/vec.cuh"

namespace kvasir::cuda {
namespace {

template <typename T>
__global__ void SiluMulKernel(SiluMulParams<T> p) {
  const int64_t total = p.m * p.h;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = idx / p.h, i = idx % p.h;
    const T* row = p.gate_up + r * 2 * p.h;
    const float g = ToFloat(row[i]), u = ToFloat(row[p.h + i]);
    p.out[idx] = FromFloat<T>(g / (1.0f + expf(-g)) * u);
  }
}

}  // namespace

template <typename T>
cudaError_t InvokeSiluMul(const SiluMulParams<T>& p, cudaStream_t stream) {
  if (p.m < 0 || p.h < 0) return cudaErrorInvalidValue;
  const int64_t total = p.m * p.h;
  if (total == 0) return cudaSuccess;
  constexpr int kThreads = 256;
  const int64_t blocks = std::min<int64_t>((total + kThreads - 1) / kThreads, 65536);
  SiluMulKernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

template cudaError_t InvokeSiluMul<float>(const SiluMulParams<float>&, cudaStream_t);
template cudaError_t InvokeSiluMul<__nv_bfloat16>(const SiluMulParams<__nv_bfloat16>&,
                                                  cudaStream_t);

}  // namespace kvasir::cuda

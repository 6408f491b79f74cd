#include "kernels/common/reduce.cuh"
#include "kernels/common/vec.cuh"
#include "kernels/norm/rms_norm.cuh"

namespace kvasir::cuda {
namespace {

// One block per row.
template <typename T>
__global__ void RmsNormKernel(RmsNormParams<T> p) {
  const int64_t r = blockIdx.x;
  const T* x = p.x + r * p.d;
  T* y = p.y + r * p.d;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < p.d; i += blockDim.x) {
    const float v = ToFloat(x[i]);
    ss = fmaf(v, v, ss);
  }
  const float inv = rsqrtf(BlockSum(ss) / static_cast<float>(p.d) + p.eps);
  for (int64_t i = threadIdx.x; i < p.d; i += blockDim.x) {
    y[i] = FromFloat<T>(ToFloat(x[i]) * inv * ToFloat(p.weight[i]));
  }
}

template <typename T>
__global__ void AddRmsNormKernel(AddRmsNormParams<T> p) {
  const int64_t r = blockIdx.x;
  T* res = p.residual + r * p.d;
  const T* del = p.delta + r * p.d;
  T* y = p.y + r * p.d;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < p.d; i += blockDim.x) {
    const T z = FromFloat<T>(ToFloat(res[i]) + ToFloat(del[i]));
    res[i] = z;
    const float v = ToFloat(z);
    ss = fmaf(v, v, ss);
  }
  const float inv = rsqrtf(BlockSum(ss) / static_cast<float>(p.d) + p.eps);
  // Each thread re-reads only the elements it wrote itself.
  for (int64_t i = threadIdx.x; i < p.d; i += blockDim.x) {
    y[i] = FromFloat<T>(ToFloat(res[i]) * inv * ToFloat(p.weight[i]));
  }
}

int ThreadsFor(int64_t d) {
  int t = 32;
  while (t < 1024 && t < d) t *= 2;
  return t > 256 && d < 4096 ? 256 : t;
}

}  // namespace

template <typename T>
cudaError_t InvokeRmsNorm(const RmsNormParams<T>& p, cudaStream_t stream) {
  if (p.m < 0 || p.d <= 0 || p.m > 0x7FFFFFFF) return cudaErrorInvalidValue;
  if (p.m == 0) return cudaSuccess;
  RmsNormKernel<T><<<static_cast<unsigned>(p.m), ThreadsFor(p.d), 0, stream>>>(p);
  return cudaGetLastError();
}

template <typename T>
cudaError_t InvokeAddRmsNorm(const AddRmsNormParams<T>& p, cudaStream_t stream) {
  if (p.m < 0 || p.d <= 0 || p.m > 0x7FFFFFFF) return cudaErrorInvalidValue;
  if (p.m == 0) return cudaSuccess;
  AddRmsNormKernel<T><<<static_cast<unsigned>(p.m), ThreadsFor(p.d), 0, stream>>>(p);
  return cudaGetLastError();
}

template cudaError_t InvokeRmsNorm<float>(const RmsNormParams<float>&, cudaStream_t);
template cudaError_t InvokeRmsNorm<__nv_bfloat16>(const RmsNormParams<__nv_bfloat16>&,
                                                  cudaStream_t);
template cudaError_t InvokeAddRmsNorm<float>(const AddRmsNormParams<float>&, cudaStream_t);
template cudaError_t InvokeAddRmsNorm<__nv_bfloat16>(const AddRmsNormParams<__nv_bfloat16>&,
                                                     cudaStream_t);

}  // namespace kvasir::cuda

// RMSNorm and fused residual-add + RMSNorm (CUDA); the CPU references are
// CpuBackend::RmsNorm / AddRmsNorm (src/runtime/cpu). T is float or __nv_bfloat16 for every
// buffer; sums of squares and scaling are fp32. eps is inside the square root:
// y = x / sqrt(mean(x²) + eps) * weight.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace kvasir::cuda {

template <typename T>
struct RmsNormParams {
  const T* x = nullptr;       // [m, d]
  const T* weight = nullptr;  // [d]
  T* y = nullptr;             // [m, d] out (may alias x)
  int64_t m = 0;
  int64_t d = 0;
  float eps = 1e-5f;
};

// residual += delta (stored back as T, the norm reads the stored value); y = RmsNorm(residual).
template <typename T>
struct AddRmsNormParams {
  T* residual = nullptr;      // [m, d] in/out
  const T* delta = nullptr;   // [m, d]
  const T* weight = nullptr;  // [d]
  T* y = nullptr;             // [m, d] out
  int64_t m = 0;
  int64_t d = 0;
  float eps = 1e-5f;
};

template <typename T>
cudaError_t InvokeRmsNorm(const RmsNormParams<T>& p, cudaStream_t stream);
template <typename T>
cudaError_t InvokeAddRmsNorm(const AddRmsNormParams<T>& p, cudaStream_t stream);

}  // namespace kvasir::cuda

// SiLU-and-multiply of a fused gate/up projection (CUDA); the CPU reference is
// CpuBackend::SiluMul (src/runtime/cpu): out = silu(gate) * up, silu(g) = g / (1 + e^−g).
// T is float or __nv_bfloat16; math is fp32.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace kvasir::cuda {

template <typename T>
struct SiluMulParams {
  const T* gate_up = nullptr;  // [m, 2h]: gate in columns [0, h), up in [h, 2h)
  T* out = nullptr;            // [m, h]
  int64_t m = 0;
  int64_t h = 0;
};

template <typename T>
cudaError_t InvokeSiluMul(const SiluMulParams<T>& p, cudaStream_t stream);

}  // namespace kvasir::cuda

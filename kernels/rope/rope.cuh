// Rotary position embedding in place (CUDA); the CPU reference is CpuBackend::Rope
// (src/runtime/cpu). Angle = float(positions[r]) * inv_freq[i], computed in fp32 as the HF
// reference does; sin/cos at full precision (positions reach tens of thousands of radians).
// T is float or __nv_bfloat16; math is fp32.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace kvasir::cuda {

// kInterleaved rotates adjacent pairs (2i, 2i+1) as llama2.c does; kHalf rotates (i, i + d/2)
// as HF Llama's rotate_half does. Mirrors kvasir::RopeStyle without depending on runtime/.
enum class RopeLayout : int32_t { kInterleaved = 0, kHalf = 1 };

template <typename T>
struct RopeParams {
  T* x = nullptr;  // [m, row_stride]; head h of row r at x + r * row_stride + h * head_dim
  int64_t m = 0;
  int64_t row_stride = 0;
  int32_t num_heads = 0;
  int32_t head_dim = 0;                // even
  const int32_t* positions = nullptr;  // [m]
  const float* inv_freq = nullptr;     // [head_dim / 2]
  RopeLayout layout = RopeLayout::kHalf;
};

template <typename T>
cudaError_t InvokeRope(const RopeParams<T>& p, cudaStream_t stream);

}  // namespace kvasir::cuda

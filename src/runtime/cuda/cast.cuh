// Element-wise fp32 <-> bf16 conversion (CUDA) between the runner's fp32 activations and the
// bf16 GEMM operands. To bf16 rounds to nearest even (__float2bfloat16_rn), like the host-side
// weight conversion; to fp32 is exact.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace kvasir::cuda {

// y[n] = bf16(x[n])
cudaError_t InvokeCastToBf16(const float* x, __nv_bfloat16* y, int64_t n, cudaStream_t stream);
// y[n] = float(x[n])
cudaError_t InvokeCastToFloat(const __nv_bfloat16* x, float* y, int64_t n, cudaStream_t stream);

}  // namespace kvasir::cuda

// Block-wide reductions for the row kernels.
#pragma once

#include <cuda_runtime.h>

namespace kvasir::cuda {

__device__ __forceinline__ float WarpSum(float x) {
#pragma unroll
  for (int off = 16; off > 0; off /= 2) x += __shfl_xor_sync(0xffffffffu, x, off);
  return x;
}

// Sum over the whole block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
__device__ __forceinline__ float BlockSum(float x) {
  __shared__ float partial[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  x = WarpSum(x);
  __syncthreads();  // partial may still be read by a previous call
  if (lane == 0) partial[warp] = x;
  __syncthreads();
  const int warps = blockDim.x / 32;
  x = lane < warps ? partial[lane] : 0.0f;
  return WarpSum(x);
}

}  // namespace kvasir::cuda

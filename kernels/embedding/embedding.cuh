// Embedding gather (CUDA); the CPU reference is CpuBackend::Embedding (src/runtime/cpu).
// Rows whose id is outside [0, vocab_size) are written as zeros rather than read out of bounds
// (ids are validated before they reach the engine; this only keeps a bad id from faulting).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace kvasir::cuda {

template <typename T>
struct EmbeddingParams {
  const int32_t* ids = nullptr;  // [m]
  const T* table = nullptr;      // [vocab_size, d]
  T* out = nullptr;              // [m, d]
  int64_t m = 0;
  int64_t d = 0;
  int64_t vocab_size = 0;
};

template <typename T>
cudaError_t InvokeEmbedding(const EmbeddingParams<T>& p, cudaStream_t stream);

}  // namespace kvasir::cuda

#include "kernels/common/vec.cuh"
#include "kernels/embedding/embedding.cuh"

namespace kvasir::cuda {
namespace {

// One block per row; a straight copy, so no conversion is needed.
template <typename T>
__global__ void EmbeddingKernel(EmbeddingParams<T> p) {
  const int64_t r = blockIdx.x;
  const int64_t id = p.ids[r];
  T* out = p.out + r * p.d;
  if (id < 0 || id >= p.vocab_size) {
    for (int64_t i = threadIdx.x; i < p.d; i += blockDim.x) out[i] = FromFloat<T>(0.0f);
    return;
  }
  const T* src = p.table + id * p.d;
  for (int64_t i = threadIdx.x; i < p.d; i += blockDim.x) out[i] = src[i];
}

}  // namespace

template <typename T>
cudaError_t InvokeEmbedding(const EmbeddingParams<T>& p, cudaStream_t stream) {
  if (p.m < 0 || p.d <= 0 || p.vocab_size < 0 || p.m > 0x7FFFFFFF) return cudaErrorInvalidValue;
  if (p.m == 0) return cudaSuccess;
  const int threads = p.d >= 256 ? 256 : 64;
  EmbeddingKernel<T><<<static_cast<unsigned>(p.m), threads, 0, stream>>>(p);
  return cudaGetLastError();
}

template cudaError_t InvokeEmbedding<float>(const EmbeddingParams<float>&, cudaStream_t);
template cudaError_t InvokeEmbedding<__nv_bfloat16>(const EmbeddingParams<__nv_bfloat16>&,
                                                    cudaStream_t);

}  // namespace kvasir::cuda

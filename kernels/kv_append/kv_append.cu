#include <algorithm>

#include "kernels/common/vec.cuh"
#include "kernels/kv_append/kv_append.cuh"

namespace kvasir::cuda {
namespace {

// One thread per element; consecutive threads write consecutive elements of a pool row.
template <typename SrcT, typename KvT>
__global__ void KvAppendKernel(KvAppendParams<SrcT, KvT> p, int64_t src_stride) {
  const int64_t rows = int64_t{p.n} * p.num_heads;
  const int64_t total = rows * p.head_dim;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t row = idx / p.head_dim;  // i * num_heads + h
    const int64_t e = idx % p.head_dim;
    const int64_t slot = p.slot_mapping[row];
    if (slot < 0) continue;
    const int64_t i = row / p.num_heads, h = row % p.num_heads;
    const int64_t src = i * src_stride + h * p.head_dim + e;
    const int64_t dst = slot * p.head_dim + e;
    p.k_pool[dst] = FromFloat<KvT>(ToFloat(p.k[src]));
    p.v_pool[dst] = FromFloat<KvT>(ToFloat(p.v[src]));
  }
}

}  // namespace

template <typename SrcT, typename KvT>
cudaError_t InvokeKvAppend(const KvAppendParams<SrcT, KvT>& p, cudaStream_t stream) {
  if (p.n < 0 || p.num_heads < 0 || p.head_dim <= 0) return cudaErrorInvalidValue;
  const int64_t total = int64_t{p.n} * p.num_heads * p.head_dim;
  if (total == 0) return cudaSuccess;
  const int64_t src_stride = p.src_stride ? p.src_stride : int64_t{p.num_heads} * p.head_dim;
  constexpr int kThreads = 256;
  const int64_t blocks = std::min<int64_t>((total + kThreads - 1) / kThreads, 65536);
  KvAppendKernel<SrcT, KvT><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(p, src_stride);
  return cudaGetLastError();
}

template cudaError_t InvokeKvAppend<float, float>(const KvAppendParams<float, float>&,
                                                  cudaStream_t);
template cudaError_t InvokeKvAppend<float, __nv_bfloat16>(
    const KvAppendParams<float, __nv_bfloat16>&, cudaStream_t);
template cudaError_t InvokeKvAppend<__nv_bfloat16, __nv_bfloat16>(
    const KvAppendParams<__nv_bfloat16, __nv_bfloat16>&, cudaStream_t);

}  // namespace kvasir::cuda

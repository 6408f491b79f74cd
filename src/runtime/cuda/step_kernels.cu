#include "runtime/cuda/step_kernels.cuh"

namespace kvasir::cuda {
namespace {

__global__ void ScatterInt32Kernel(const int2* pairs, int64_t n, int32_t* dst) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int2 e = pairs[i];
    dst[e.x] = e.y;
  }
}

__global__ void KvSlotsKernel(KvSlotsParams p) {
  const int64_t total = int64_t{p.num_layers} * p.T * p.num_kv_heads;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int32_t h = static_cast<int32_t>(i % p.num_kv_heads);
    const int64_t lt = i / p.num_kv_heads;
    const int32_t t = static_cast<int32_t>(lt % p.T);
    const int32_t l = static_cast<int32_t>(lt / p.T);
    const int32_t slot = p.row_slot[t];
    if (slot < 0) {
      p.slots[i] = -1;  // padding row: InvokeKvAppend skips it
      continue;
    }
    const int32_t pos = p.positions[t];
    const int64_t table = ((int64_t{slot} * p.num_layers + l) * p.num_kv_heads + h) * p.max_blocks;
    p.slots[i] = int64_t{p.tables[table + pos / p.block_size]} * p.block_size + pos % p.block_size;
  }
}

__global__ void MergeFarRowsKernel(MergeFarRowsParams p) {
  const int64_t width = int64_t{p.heads} * p.head_dim;
  const int64_t total = p.F * width;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t k = i / width, e = i % width;
    const int32_t h = static_cast<int32_t>(e / p.head_dim);
    const int64_t row = p.rows[k];
    const float a = p.lse[row * p.heads + h], b = p.far_lse[k * p.heads + h];
    const float m = fmaxf(a, b);
    float* o = p.o + row * p.o_row_stride + e;
    if (m == -INFINITY) {
      *o = 0.0f;
      continue;
    }
    const float wa = a == -INFINITY ? 0.0f : __expf(a - m);
    const float wb = b == -INFINITY ? 0.0f : __expf(b - m);
    *o = (wa * *o + wb * p.far_o[k * width + e]) / (wa + wb);
  }
}

unsigned GridFor(int64_t n, int threads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 65536 ? blocks : 65536);
}

}  // namespace

cudaError_t InvokeScatterInt32(const int2* pairs, int64_t n, int32_t* dst, cudaStream_t stream) {
  if (n < 0 || (n > 0 && (pairs == nullptr || dst == nullptr))) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  ScatterInt32Kernel<<<GridFor(n, 256), 256, 0, stream>>>(pairs, n, dst);
  return cudaGetLastError();
}

cudaError_t InvokeKvSlots(const KvSlotsParams& p, cudaStream_t stream) {
  if (p.T < 0 || p.num_layers < 1 || p.num_kv_heads < 1 || p.max_blocks < 1 ||
      p.block_size < 1) {
    return cudaErrorInvalidValue;
  }
  const int64_t total = int64_t{p.num_layers} * p.T * p.num_kv_heads;
  if (total == 0) return cudaSuccess;
  KvSlotsKernel<<<GridFor(total, 256), 256, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t InvokeMergeFarRows(const MergeFarRowsParams& p, cudaStream_t stream) {
  if (p.F < 0 || p.heads < 1 || p.head_dim < 1) return cudaErrorInvalidValue;
  if (p.F == 0) return cudaSuccess;
  if (p.o == nullptr || p.lse == nullptr || p.far_o == nullptr || p.far_lse == nullptr ||
      p.rows == nullptr || p.o_row_stride < int64_t{p.heads} * p.head_dim) {
    return cudaErrorInvalidValue;
  }
  constexpr int kThreads = 256;
  MergeFarRowsKernel<<<GridFor(p.F * int64_t{p.heads} * p.head_dim, kThreads), kThreads, 0,
                       stream>>>(p);
  return cudaGetLastError();
}

}  // namespace kvasir::cuda

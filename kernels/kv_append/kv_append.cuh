// Writes new K/V rows into the paged pools (CUDA); the CPU reference is KvAppendRef
// (kv_append_ref.h). Row i, head h goes to pool row slot_mapping[i * num_heads + h]
// (= block * block_size + slot of that head's page table, so one launch can fill the tables of
// many sequences and heads); a negative slot skips the row (padding).
// Source and pool types: (float, float), (float, __nv_bfloat16), (__nv_bfloat16, __nv_bfloat16);
// conversion to bf16 rounds to nearest even.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace kvasir::cuda {

template <typename SrcT, typename KvT>
struct KvAppendParams {
  const SrcT* k = nullptr;  // [n, src_stride]; head h of row i at k + i * src_stride + h * head_dim
  const SrcT* v = nullptr;  // [n, src_stride], same layout
  int64_t src_stride = 0;   // elements between rows; 0 means num_heads * head_dim
  int32_t n = 0;
  int32_t num_heads = 1;
  int32_t head_dim = 0;
  const int64_t* slot_mapping = nullptr;  // [n, num_heads] pool row, < 0 to skip
  KvT* k_pool = nullptr;                  // [num_blocks, block_size, head_dim]
  KvT* v_pool = nullptr;                  // [num_blocks, block_size, head_dim]
};

template <typename SrcT, typename KvT>
cudaError_t InvokeKvAppend(const KvAppendParams<SrcT, KvT>& p, cudaStream_t stream);

}  // namespace kvasir::cuda

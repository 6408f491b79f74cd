// CPU reference of the KV append kernel (kv_append.cuh): the same slot mapping over fp32 pools.
#pragma once

#include <cstdint>

namespace kvasir {

// k, v: [n, src_stride], head h of row i at + i * src_stride + h * head_dim;
// slot_mapping: [n, num_heads] pool rows (< 0 skips); k_pool, v_pool:
// [num_blocks, block_size, head_dim].
void KvAppendRef(const float* k, const float* v, int64_t src_stride, int32_t n, int32_t num_heads,
                 int32_t head_dim, const int64_t* slot_mapping, float* k_pool, float* v_pool);

}  // namespace kvasir

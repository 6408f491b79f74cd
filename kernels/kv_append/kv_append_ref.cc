#include "kernels/kv_append/kv_append_ref.h"

#include <algorithm>

namespace kvasir {

void KvAppendRef(const float* k, const float* v, int64_t src_stride, int32_t n, int32_t num_heads,
                 int32_t head_dim, const int64_t* slot_mapping, float* k_pool, float* v_pool) {
  if (src_stride == 0) src_stride = static_cast<int64_t>(num_heads) * head_dim;
  for (int32_t i = 0; i < n; ++i) {
    for (int32_t h = 0; h < num_heads; ++h) {
      const int64_t slot = slot_mapping[static_cast<int64_t>(i) * num_heads + h];
      if (slot < 0) continue;
      const int64_t src = i * src_stride + static_cast<int64_t>(h) * head_dim;
      std::copy(k + src, k + src + head_dim, k_pool + slot * head_dim);
      std::copy(v + src, v + src + head_dim, v_pool + slot * head_dim);
    }
  }
}

}  // namespace kvasir

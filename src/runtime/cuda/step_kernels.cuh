// Small kernels of the CUDA runner's step bookkeeping: the device copy of the page tables is
// updated by scattering only the block ids that changed, and the KV-append slots of a step are
// computed on the device from those tables (nothing proportional to the context goes over PCIe).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace kvasir::cuda {

// dst[pairs[i].x] = pairs[i].y for i < n.
cudaError_t InvokeScatterInt32(const int2* pairs, int64_t n, int32_t* dst, cudaStream_t stream);

struct KvSlotsParams {
  // Page tables of every sequence slot: table (slot, layer, kv_head) is
  // tables[((slot * num_layers + layer) * num_kv_heads + kv_head) * max_blocks ...].
  const int32_t* tables = nullptr;
  const int32_t* row_slot = nullptr;   // [T] sequence slot of each row of the step, < 0: none
  const int32_t* positions = nullptr;  // [T] position of each row
  int32_t T = 0, num_layers = 0, num_kv_heads = 0, max_blocks = 0, block_size = 16;
  // [num_layers, T, num_kv_heads] out: pool row (block * block_size + slot) of each new K/V row,
  // -1 for rows without a sequence slot (graph padding; the KV append skips them).
  int64_t* slots = nullptr;
};
cudaError_t InvokeKvSlots(const KvSlotsParams& p, cudaStream_t stream);

// The hybrid executor's merge: row rows[k] of o (attention over the part of its history on the
// GPU, natural-log lse) and far row k (the rest, from the host) become attention over both:
//   m = max(a, b), o = (e^{a-m} o_near + e^{b-m} o_far) / (e^{a-m} + e^{b-m}), in place;
// a part with lse = -inf counts for nothing (both: 0).
struct MergeFarRowsParams {
  float* o = nullptr;              // [T, o_row_stride], heads * head_dim used
  int64_t o_row_stride = 0;
  const float* lse = nullptr;      // [T, heads]
  const float* far_o = nullptr;    // [F, heads * head_dim]
  const float* far_lse = nullptr;  // [F, heads]
  const int32_t* rows = nullptr;   // [F] row of o of each far row
  int32_t F = 0, heads = 0, head_dim = 0;
};
cudaError_t InvokeMergeFarRows(const MergeFarRowsParams& p, cudaStream_t stream);

}  // namespace kvasir::cuda

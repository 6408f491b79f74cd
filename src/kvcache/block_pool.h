// A pool of fixed-size KV blocks. One block holds `block_size` tokens of ONE (layer, kv_head):
// blocks are head-granular so each head's page table can have its own length (Task-KV).
//
// Rows are stored as fp32 or bf16 (KvDType): bf16 halves the host memory per token at the
// rounding the GPU's KV pool already has; rows are converted when written (WriteRow), and the
// attention kernels read either layout (PagedAttentionParams::k_pool or k_pool_bf16).
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace kvasir {

enum class KvDType { kF32, kBF16 };

inline int64_t KvDTypeSize(KvDType t) { return t == KvDType::kF32 ? 4 : 2; }
std::string_view KvDTypeName(KvDType t);  // "fp32", "bf16"
// Accepts "fp32" / "float32" / "bf16" / "bfloat16".
absl::StatusOr<KvDType> ParseKvDType(std::string_view s);

class BlockPool {
 public:
  // host_storage = false keeps only the bookkeeping (which blocks are free): the K/V rows live
  // elsewhere, e.g. in a device pool indexed by the same block ids; the data pointers are null.
  BlockPool(int32_t num_blocks, int32_t block_size, int32_t head_dim, bool host_storage = true,
            KvDType dtype = KvDType::kF32);

  int32_t num_blocks() const { return num_blocks_; }
  int32_t block_size() const { return block_size_; }
  int32_t head_dim() const { return head_dim_; }
  KvDType dtype() const { return dtype_; }
  int32_t num_free() const { return static_cast<int32_t>(free_.size()); }
  int32_t num_used() const { return num_blocks_ - num_free(); }
  bool has_host_storage() const { return host_storage_; }
  // Bytes of K + V one block takes in this pool's dtype.
  int64_t bytes_per_block() const {
    return 2 * int64_t{block_size_} * head_dim_ * KvDTypeSize(dtype_);
  }

  // Takes one free block; ResourceExhausted when none is left.
  absl::StatusOr<int32_t> Allocate();
  void Free(int32_t block);

  // The pools, [num_blocks, block_size, head_dim]: fp32 ones (null unless dtype is kF32) and
  // bf16 bits (null unless kBF16).
  const float* k_data() const { return k_.empty() ? nullptr : k_.data(); }
  const float* v_data() const { return v_.empty() ? nullptr : v_.data(); }
  const uint16_t* k_bf16() const { return k16_.empty() ? nullptr : k16_.data(); }
  const uint16_t* v_bf16() const { return v16_.empty() ? nullptr : v16_.data(); }

  // Stores one token's K and V (fp32, head_dim each) at (block, slot), rounding to the dtype.
  void WriteRow(int32_t block, int32_t slot, const float* k, const float* v);
  // Copies the K/V rows at (src_block, src_slot) to (dst_block, dst_slot).
  void CopyRow(int32_t dst_block, int32_t dst_slot, int32_t src_block, int32_t src_slot);
  // Reads one row back as fp32 (tests, debugging).
  void ReadRow(int32_t block, int32_t slot, float* k, float* v) const;

 private:
  int64_t Offset(int32_t block, int32_t slot) const {
    return (static_cast<int64_t>(block) * block_size_ + slot) * head_dim_;
  }

  int32_t num_blocks_, block_size_, head_dim_;
  bool host_storage_;
  KvDType dtype_;
  std::vector<float> k_, v_;        // fp32 rows; empty otherwise
  std::vector<uint16_t> k16_, v16_;  // bf16 rows; empty otherwise
  std::vector<int32_t> free_;       // stack of free block ids
  std::vector<uint8_t> allocated_;  // [num_blocks] for double-free checks
};

}  // namespace kvasir

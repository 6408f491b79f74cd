// A pool of fixed-size KV blocks. One block holds `block_size` tokens of ONE (layer, kv_head):
// blocks are head-granular so each head's page table can have its own length (Task-KV).
#pragma once

#include <cstdint>
#include <vector>

#include "common/status.h"

namespace kvasir {

class BlockPool {
 public:
  // host_storage = false keeps only the bookkeeping (which blocks are free): the K/V rows live
  // elsewhere, e.g. in a device pool indexed by the same block ids; k_data()/v_data() are null.
  BlockPool(int32_t num_blocks, int32_t block_size, int32_t head_dim, bool host_storage = true);

  int32_t num_blocks() const { return num_blocks_; }
  int32_t block_size() const { return block_size_; }
  int32_t head_dim() const { return head_dim_; }
  int32_t num_free() const { return static_cast<int32_t>(free_.size()); }
  int32_t num_used() const { return num_blocks_ - num_free(); }
  bool has_host_storage() const { return host_storage_; }

  // Takes one free block; ResourceExhausted when none is left.
  absl::StatusOr<int32_t> Allocate();
  void Free(int32_t block);

  float* k_data() { return k_.data(); }  // [num_blocks, block_size, head_dim]
  float* v_data() { return v_.data(); }  // [num_blocks, block_size, head_dim]
  const float* k_data() const { return k_.data(); }
  const float* v_data() const { return v_.data(); }
  float* KRow(int32_t block, int32_t slot) {
    return k_.data() + (static_cast<int64_t>(block) * block_size_ + slot) * head_dim_;
  }
  float* VRow(int32_t block, int32_t slot) {
    return v_.data() + (static_cast<int64_t>(block) * block_size_ + slot) * head_dim_;
  }

 private:
  int32_t num_blocks_, block_size_, head_dim_;
  bool host_storage_;
  std::vector<float> k_, v_;  // empty without host storage
  std::vector<int32_t> free_;       // stack of free block ids
  std::vector<uint8_t> allocated_;  // [num_blocks] for double-free checks
};

}  // namespace kvasir

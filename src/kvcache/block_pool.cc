#include "kvcache/block_pool.h"

#include "common/logging.h"

namespace kvasir {

BlockPool::BlockPool(int32_t num_blocks, int32_t block_size, int32_t head_dim,
                     bool host_storage)
    : num_blocks_(num_blocks),
      block_size_(block_size),
      head_dim_(head_dim),
      host_storage_(host_storage),
      k_(host_storage ? static_cast<size_t>(num_blocks) * block_size * head_dim : 0),
      v_(host_storage ? static_cast<size_t>(num_blocks) * block_size * head_dim : 0),
      allocated_(num_blocks, 0) {
  KVASIR_CHECK(num_blocks >= 0 && block_size > 0 && head_dim > 0);
  free_.reserve(num_blocks);
  for (int32_t b = num_blocks - 1; b >= 0; --b) free_.push_back(b);
}

absl::StatusOr<int32_t> BlockPool::Allocate() {
  if (free_.empty()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("KV block pool exhausted (", num_blocks_, " blocks)"));
  }
  int32_t b = free_.back();
  free_.pop_back();
  allocated_[b] = 1;
  return b;
}

void BlockPool::Free(int32_t block) {
  KVASIR_CHECK(block >= 0 && block < num_blocks_ && allocated_[block]);
  allocated_[block] = 0;
  free_.push_back(block);
}

}  // namespace kvasir

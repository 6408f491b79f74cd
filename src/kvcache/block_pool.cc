#include "kvcache/block_pool.h"

#include <cstring>
#include <string>

#include "absl/strings/ascii.h"
#include "common/dtype.h"
#include "common/logging.h"

namespace kvasir {

std::string_view KvDTypeName(KvDType t) { return t == KvDType::kF32 ? "fp32" : "bf16"; }

absl::StatusOr<KvDType> ParseKvDType(std::string_view s) {
  const std::string l = absl::AsciiStrToLower(std::string(s));
  if (l == "fp32" || l == "float32") return KvDType::kF32;
  if (l == "bf16" || l == "bfloat16") return KvDType::kBF16;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown KV cache dtype '", std::string(s), "' (expected fp32 or bf16)"));
}

BlockPool::BlockPool(int32_t num_blocks, int32_t block_size, int32_t head_dim,
                     bool host_storage, KvDType dtype)
    : num_blocks_(num_blocks),
      block_size_(block_size),
      head_dim_(head_dim),
      host_storage_(host_storage),
      dtype_(dtype),
      allocated_(num_blocks, 0) {
  KVASIR_CHECK(num_blocks >= 0 && block_size > 0 && head_dim > 0);
  if (host_storage) {
    const size_t n = static_cast<size_t>(num_blocks) * block_size * head_dim;
    if (dtype == KvDType::kF32) {
      k_.resize(n);
      v_.resize(n);
    } else {
      k16_.resize(n);
      v16_.resize(n);
    }
  }
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

void BlockPool::WriteRow(int32_t block, int32_t slot, const float* k, const float* v) {
  KVASIR_CHECK(host_storage_);
  const int64_t at = Offset(block, slot);
  if (dtype_ == KvDType::kF32) {
    std::memcpy(k_.data() + at, k, head_dim_ * sizeof(float));
    std::memcpy(v_.data() + at, v, head_dim_ * sizeof(float));
    return;
  }
  uint16_t* kd = k16_.data() + at;
  uint16_t* vd = v16_.data() + at;
  for (int32_t i = 0; i < head_dim_; ++i) {
    kd[i] = F32ToBF16(k[i]);
    vd[i] = F32ToBF16(v[i]);
  }
}

void BlockPool::CopyRow(int32_t dst_block, int32_t dst_slot, int32_t src_block,
                        int32_t src_slot) {
  KVASIR_CHECK(host_storage_);
  const int64_t dst = Offset(dst_block, dst_slot), src = Offset(src_block, src_slot);
  if (dtype_ == KvDType::kF32) {
    std::memmove(k_.data() + dst, k_.data() + src, head_dim_ * sizeof(float));
    std::memmove(v_.data() + dst, v_.data() + src, head_dim_ * sizeof(float));
  } else {
    std::memmove(k16_.data() + dst, k16_.data() + src, head_dim_ * sizeof(uint16_t));
    std::memmove(v16_.data() + dst, v16_.data() + src, head_dim_ * sizeof(uint16_t));
  }
}

void BlockPool::ReadRow(int32_t block, int32_t slot, float* k, float* v) const {
  KVASIR_CHECK(host_storage_);
  const int64_t at = Offset(block, slot);
  if (dtype_ == KvDType::kF32) {
    std::memcpy(k, k_.data() + at, head_dim_ * sizeof(float));
    std::memcpy(v, v_.data() + at, head_dim_ * sizeof(float));
    return;
  }
  for (int32_t i = 0; i < head_dim_; ++i) {
    k[i] = BF16ToF32(k16_[at + i]);
    v[i] = BF16ToF32(v16_[at + i]);
  }
}

}  // namespace kvasir

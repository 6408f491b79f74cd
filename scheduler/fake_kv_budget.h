// A KvBudget for tests: counts blocks per sequence without storing anything. Allocate() counts
// the tokens as stored at once (the real cache stores them during the step; the scheduler only
// asks again after the step, so the two agree).
#pragma once

#include <cstdint>
#include <unordered_map>

#include "scheduler/kv_budget.h"

namespace kvasir::sched {

class FakeKvBudget : public KvBudget {
 public:
  // blocks_per_token_block: pool blocks per block_size tokens (num_layers * num_kv_heads).
  FakeKvBudget(int64_t num_blocks, int32_t block_size, int32_t blocks_per_token_block = 1)
      : num_blocks_(num_blocks), block_size_(block_size), per_(blocks_per_token_block) {}

  int64_t BlocksNeeded(int64_t seq_id, int32_t num_tokens) const override {
    auto it = seqs_.find(seq_id);
    const int64_t have = it == seqs_.end() ? 0 : it->second;
    return BlocksForTokens(have + num_tokens) - BlocksForTokens(have);
  }
  int64_t BlocksForTokens(int64_t num_tokens) const override {
    return (num_tokens + block_size_ - 1) / block_size_ * per_;
  }
  int64_t NumFreeBlocks() const override { return num_blocks_ - used_; }
  int64_t NumTotalBlocks() const override { return num_blocks_; }

  absl::Status Allocate(int64_t seq_id, int32_t num_tokens) override {
    const int64_t need = BlocksNeeded(seq_id, num_tokens);
    if (need > NumFreeBlocks()) {
      return absl::ResourceExhaustedError(absl::StrCat("fake KV budget: sequence ", seq_id,
                                                       " needs ", need, " blocks, ",
                                                       NumFreeBlocks(), " free"));
    }
    seqs_[seq_id] += num_tokens;
    used_ += need;
    ++num_allocations_;
    return absl::OkStatus();
  }
  void Free(int64_t seq_id) override {
    auto it = seqs_.find(seq_id);
    if (it == seqs_.end()) return;
    used_ -= BlocksForTokens(it->second);
    seqs_.erase(it);
  }

  int64_t used_blocks() const { return used_; }
  bool Holds(int64_t seq_id) const { return seqs_.count(seq_id) > 0; }
  // Tokens held by seq_id (0 when not held).
  int64_t tokens(int64_t seq_id) const {
    auto it = seqs_.find(seq_id);
    return it == seqs_.end() ? 0 : it->second;
  }
  int64_t blocks(int64_t seq_id) const { return BlocksForTokens(tokens(seq_id)); }
  size_t num_sequences() const { return seqs_.size(); }
  int64_t num_allocations() const { return num_allocations_; }

 private:
  int64_t num_blocks_;
  int32_t block_size_;
  int32_t per_;
  int64_t used_ = 0;
  int64_t num_allocations_ = 0;
  std::unordered_map<int64_t, int64_t> seqs_;  // seq id -> tokens held
};

}  // namespace kvasir::sched

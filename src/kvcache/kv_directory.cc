#include "kvcache/kv_directory.h"

#include <algorithm>
#include <numeric>

namespace kvasir {

KvDirectory::KvDirectory(int64_t blocks_per_token_block, int32_t block_size)
    : blocks_per_token_block_(blocks_per_token_block), block_size_(block_size) {}

int32_t KvDirectory::AddWorker(std::string name, int64_t num_blocks) {
  workers_.push_back({std::move(name), num_blocks, num_blocks, true});
  return static_cast<int32_t>(workers_.size()) - 1;
}

void KvDirectory::SetAlive(int32_t worker, bool alive) { workers_[worker].alive = alive; }

std::vector<int64_t> KvDirectory::DropWorker(int32_t worker) {
  std::vector<int64_t> keys;
  for (auto& [key, segs] : seqs_) {
    const size_t before = segs.size();
    std::erase_if(segs, [&](const PlannedSegment& s) { return s.worker == worker; });
    if (segs.size() != before) keys.push_back(key);
  }
  Worker& w = workers_[worker];
  w.alive = false;
  w.free_blocks = w.num_blocks;
  return keys;
}

void KvDirectory::ResetWorker(int32_t worker, int64_t num_blocks, int64_t free_blocks) {
  int64_t listed = 0;
  for (const auto& [key, segs] : seqs_) {
    for (const PlannedSegment& s : segs) {
      if (s.worker == worker) listed += BlocksFor(s.capacity);
    }
  }
  Worker& w = workers_[worker];
  w.num_blocks = num_blocks;
  w.free_blocks = std::max<int64_t>(0, free_blocks - listed);
  w.alive = true;
}

int64_t KvDirectory::BlocksFor(int64_t tokens) const {
  return blocks_per_token_block_ * ((tokens + block_size_ - 1) / block_size_);
}

int64_t KvDirectory::TokensFitting(int64_t blocks) const {
  return blocks / blocks_per_token_block_ * block_size_;
}

int64_t KvDirectory::MaxTokens() const {
  int64_t t = 0;
  for (const Worker& w : workers_) {
    if (w.alive) t += TokensFitting(w.num_blocks);
  }
  return t;
}

int64_t KvDirectory::MaxTokensAllUp() const {
  int64_t t = 0;
  for (const Worker& w : workers_) t += TokensFitting(w.num_blocks);
  return t;
}

int64_t KvDirectory::total_blocks() const {
  int64_t t = 0;
  for (const Worker& w : workers_) t += w.alive ? w.num_blocks : 0;
  return t;
}

int64_t KvDirectory::used_blocks() const {
  int64_t t = 0;
  for (const Worker& w : workers_) t += w.alive ? w.num_blocks - w.free_blocks : 0;
  return t;
}

absl::StatusOr<std::vector<PlannedSegment>> KvDirectory::Allocate(int64_t seq_key,
                                                                  int64_t tokens) {
  if (tokens <= 0) return absl::InvalidArgumentError("a sequence needs at least one token");
  tokens = (tokens + block_size_ - 1) / block_size_ * block_size_;
  if (seqs_.count(seq_key)) {
    return absl::AlreadyExistsError(absl::StrCat("sequence ", seq_key, " is already placed"));
  }
  if (tokens > MaxTokens()) {
    if (tokens <= MaxTokensAllUp()) {
      return absl::UnavailableError(absl::StrCat(
          tokens, " tokens need the attention workers that are down (", MaxTokens(),
          " tokens of room while they are)"));
    }
    return absl::InvalidArgumentError(absl::StrCat(tokens, " tokens exceed the ", MaxTokens(),
                                                   " the attention workers can hold"));
  }
  std::vector<int32_t> order(workers_.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return workers_[a].free_blocks > workers_[b].free_blocks;
  });
  std::vector<PlannedSegment> plan;
  int64_t placed = 0;
  for (int32_t w : order) {
    if (placed == tokens) break;
    if (!workers_[w].alive) continue;
    const int64_t take = std::min(tokens - placed, TokensFitting(workers_[w].free_blocks));
    if (take <= 0) continue;
    plan.push_back({w, static_cast<int32_t>(placed), static_cast<int32_t>(take)});
    placed += take;
  }
  if (placed < tokens) {
    return absl::ResourceExhaustedError(
        absl::StrCat("attention workers have room for ", placed, " of ", tokens, " tokens now"));
  }
  for (const PlannedSegment& s : plan) workers_[s.worker].free_blocks -= BlocksFor(s.capacity);
  seqs_[seq_key] = plan;
  return plan;
}

std::vector<PlannedSegment> KvDirectory::Free(int64_t seq_key) {
  auto it = seqs_.find(seq_key);
  if (it == seqs_.end()) return {};
  std::vector<PlannedSegment> segs = std::move(it->second);
  seqs_.erase(it);
  for (const PlannedSegment& s : segs) workers_[s.worker].free_blocks += BlocksFor(s.capacity);
  return segs;
}

absl::StatusOr<PlannedSegment> KvDirectory::Extend(int64_t seq_key, int64_t tokens,
                                                   bool* grew_tail) {
  auto it = seqs_.find(seq_key);
  if (it == seqs_.end()) return absl::NotFoundError(absl::StrCat("sequence ", seq_key, " is not placed"));
  if (tokens <= 0) return absl::InvalidArgumentError("extend by at least one token");
  tokens = (tokens + block_size_ - 1) / block_size_ * block_size_;
  std::vector<PlannedSegment>& segs = it->second;
  if (segs.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("sequence ", seq_key, " lost all its segments with their workers"));
  }
  PlannedSegment& tail = segs.back();
  Worker& tw = workers_[tail.worker];
  if (tw.alive && TokensFitting(tw.free_blocks) >= tokens) {
    tail.capacity += static_cast<int32_t>(tokens);
    tw.free_blocks -= BlocksFor(tokens);
    *grew_tail = true;
    return tail;
  }
  int32_t best = -1;
  for (int32_t w = 0; w < num_workers(); ++w) {
    const bool holds = std::any_of(segs.begin(), segs.end(),
                                   [&](const PlannedSegment& s) { return s.worker == w; });
    if (holds || !workers_[w].alive || TokensFitting(workers_[w].free_blocks) < tokens) continue;
    if (best < 0 || workers_[w].free_blocks > workers_[best].free_blocks) best = w;
  }
  if (best < 0) {
    return absl::ResourceExhaustedError(
        absl::StrCat("no attention worker has room for ", tokens, " more tokens of sequence ",
                     seq_key, " now"));
  }
  const int32_t base = tail.base + tail.capacity;
  segs.push_back({best, base, static_cast<int32_t>(tokens)});
  workers_[best].free_blocks -= BlocksFor(tokens);
  *grew_tail = false;
  return segs.back();
}

void KvDirectory::UndoExtend(int64_t seq_key, int64_t tokens, bool grew_tail) {
  auto it = seqs_.find(seq_key);
  if (it == seqs_.end() || it->second.empty()) return;
  tokens = (tokens + block_size_ - 1) / block_size_ * block_size_;
  PlannedSegment& tail = it->second.back();
  workers_[tail.worker].free_blocks += BlocksFor(tokens);
  if (grew_tail) {
    tail.capacity -= static_cast<int32_t>(tokens);
  } else {
    it->second.pop_back();
  }
}

const std::vector<PlannedSegment>* KvDirectory::Find(int64_t seq_key) const {
  auto it = seqs_.find(seq_key);
  return it == seqs_.end() ? nullptr : &it->second;
}

}  // namespace kvasir

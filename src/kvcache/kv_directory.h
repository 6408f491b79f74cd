// The KV directory (DistKV-LLM's gManager), hosted by the router: which attention worker holds
// which token range (segment) of each sequence, and free blocks per worker. Pure bookkeeping;
// the caller performs the allocations it plans on the workers.
//
// Allocate() places the first tokens of a new sequence: on the worker with the most free blocks
// first, the rest of the range on the next, and so on. Extend() grows it as it runs: the tail
// segment grows while its worker has room; then the next segment goes to the freest other
// worker — a sequence that outgrows one worker continues on another. Capacities are whole
// blocks (multiples of block_size tokens). All or nothing.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/status.h"

namespace kvasir {

struct PlannedSegment {
  int32_t worker = 0;    // index from AddWorker
  int32_t base = 0;      // first token position held
  int32_t capacity = 0;  // tokens
};

class KvDirectory {
 public:
  // blocks_per_token_block: blocks one block_size-token slice of a sequence takes on a worker
  // (num_layers * num_kv_heads with head-granular pages).
  KvDirectory(int64_t blocks_per_token_block, int32_t block_size);

  int32_t AddWorker(std::string name, int64_t num_blocks);
  // A dead worker gets no new segments (its existing ones stay listed until freed).
  void SetAlive(int32_t worker, bool alive);
  // The worker is gone with its KV: forgets every segment it held (the sequences keep their
  // other segments, to be freed by their owners) and marks it dead. Returns the keys that lost
  // a segment.
  std::vector<int64_t> DropWorker(int32_t worker);
  // The worker is back (restarted, or its old segments freed): alive, with this pool size and
  // free blocks less those of segments still listed there.
  void ResetWorker(int32_t worker, int64_t num_blocks, int64_t free_blocks);

  absl::StatusOr<std::vector<PlannedSegment>> Allocate(int64_t seq_key, int64_t tokens);
  // Forgets the sequence and returns its segments (empty if unknown).
  std::vector<PlannedSegment> Free(int64_t seq_key);
  // Makes room for `tokens` more tokens after the sequence's last segment. Returns the tail
  // segment after the change; *grew_tail tells whether the old tail grew (else it is new).
  absl::StatusOr<PlannedSegment> Extend(int64_t seq_key, int64_t tokens, bool* grew_tail);
  // Reverts the Extend that returned `tail` (its allocation on the worker failed).
  void UndoExtend(int64_t seq_key, int64_t tokens, bool grew_tail);
  int32_t block_size() const { return block_size_; }
  int64_t blocks_per_token_block() const { return blocks_per_token_block_; }
  bool alive(int32_t w) const { return workers_[w].alive; }
  const std::vector<PlannedSegment>* Find(int64_t seq_key) const;

  // Longest sequence an empty directory could place (tokens). Totals count live workers only.
  int64_t MaxTokens() const;
  // The same with every worker up, dead ones included.
  int64_t MaxTokensAllUp() const;
  int64_t BlocksFor(int64_t tokens) const;
  int64_t total_blocks() const;
  int64_t used_blocks() const;
  int64_t num_sequences() const { return static_cast<int64_t>(seqs_.size()); }
  const std::string& worker_name(int32_t w) const { return workers_[w].name; }
  int64_t worker_free_blocks(int32_t w) const { return workers_[w].free_blocks; }
  int64_t worker_num_blocks(int32_t w) const { return workers_[w].num_blocks; }
  int32_t num_workers() const { return static_cast<int32_t>(workers_.size()); }

 private:
  struct Worker {
    std::string name;
    int64_t num_blocks = 0;
    int64_t free_blocks = 0;
    bool alive = true;
  };
  int64_t TokensFitting(int64_t blocks) const;

  const int64_t blocks_per_token_block_;
  const int32_t block_size_;
  std::vector<Worker> workers_;
  std::unordered_map<int64_t, std::vector<PlannedSegment>> seqs_;
};

}  // namespace kvasir

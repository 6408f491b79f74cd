// Decoder-side AttentionExecutor over attention workers (DistAttention): each sequence's KV
// lives in segments placed by the KV directory; per layer and step the decoder sends every
// worker holding a segment the step's q rows (and the new k, v rows that fall in its segment),
// gets back (o, lse) per row and head, and merges the partials exactly (DESIGN.md).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <unordered_map>
#include <vector>

#include "attention/attention_shard.h"
#include "kvcache/kv_directory.h"
#include "attention/attention_executor.h"
#include "attention/local_attention.h"

namespace kvasir {

struct SegmentPlacement {
  std::string worker;    // attention worker address (or in-process name)
  int32_t base = 0;      // first token position held
  int32_t capacity = 0;  // tokens
};

// Sequence keys are unique across the decoders sharing the workers: (decoder << 40) | sequence.
inline constexpr int kSeqKeyBits = 40;

// The KV manager as a decoder sees it: the router's KvManager (src/router/kv_manager.h) called
// in-process, or over gRPC (transport/directory_grpc.h).
class SegmentDirectory {
 public:
  virtual ~SegmentDirectory() = default;
  // Places [0, tokens) of a new sequence, all or nothing. ResourceExhausted: not now.
  // `priority`: the request's arrival order at the router (smaller is older), which decides
  // who gets blocks first across decoders.
  virtual absl::StatusOr<std::vector<SegmentPlacement>> Allocate(int64_t seq_key, int64_t tokens,
                                                                 int64_t priority) = 0;
  // Makes room for `tokens` more tokens after the last segment (the tail grows, or the next
  // segment goes to another worker). Returns all segments. ResourceExhausted: not now.
  virtual absl::StatusOr<std::vector<SegmentPlacement>> Extend(int64_t seq_key, int64_t tokens,
                                                               int64_t priority) = 0;
  // Keys of this decoder's sequences (key >> kSeqKeyBits == key_prefix) that the manager wants
  // preempted so that an older request can grow; each is returned once (again later if it is
  // still held).
  virtual std::vector<int64_t> TakePreemptions(int64_t key_prefix) = 0;
  virtual void Free(int64_t seq_key) = 0;
  // Blocks per block_size tokens of a sequence and block_size; {0, 0} when unknown.
  virtual std::pair<int64_t, int32_t> BlockShape() = 0;
  // Longest sequence the live workers could hold when empty; 0 when unknown (unreachable).
  virtual int64_t MaxTokens() = 0;
  // The same were every worker up (those down included).
  virtual int64_t MaxTokensAllUp() { return MaxTokens(); }
  // Last known usage over all workers; never blocks on the network.
  virtual KvUsage Usage() = 0;
};

// The data plane to one attention worker.
class AttentionLink {
 public:
  virtual ~AttentionLink() = default;
  // AttentionShard::Step on the worker. o: [rows, num_heads, head_dim], lse: [rows, num_heads]
  // with rows = sum of the items' num_queries. `done` runs exactly once: inline, on another
  // thread, or (for links that complete on the caller's thread) within Collect().
  virtual void Step(int32_t layer, std::span<const ShardItem> items, int64_t rows, float* o,
                    float* lse, std::function<void(absl::Status)> done) = 0;
  // Waits for the replies of every Step sent so far and runs their `done`, on this thread. The
  // caller sends a layer's steps to all its links first, then collects each: the replies of
  // the others arrive meanwhile, and no thread hop is between a reply and the caller (the TCP
  // link). Links that complete elsewhere do nothing here.
  virtual void Collect() {}
};

// Resolves a worker name from the directory to its link (connecting on first use).
using LinkResolver = std::function<absl::StatusOr<AttentionLink*>(const std::string& worker)>;

class DistributedAttention : public AttentionExecutor {
 public:
  // key_prefix keeps sequence keys unique across decoders sharing the workers: the key of
  // sequence s is (key_prefix << kSeqKeyBits) | s.
  DistributedAttention(AttentionShape shape, SegmentDirectory* directory, LinkResolver links,
                       int64_t key_prefix = 0);

  absl::Status Grow(int64_t seq_id, int32_t n) override;
  int64_t BlocksNeeded(int64_t seq_id, int32_t n) const override;
  int64_t BlocksForTokens(int64_t tokens) const override;
  void Release(int64_t seq_id) override;
  bool Contains(int64_t seq_id) const override { return seqs_.count(seq_id) > 0; }
  absl::Status CheckFits(int64_t tokens) const override;
  KvUsage Usage() const override { return directory_->Usage(); }
  void SetPriorityFn(PriorityFn fn) override { priority_ = std::move(fn); }
  bool shared() const override { return true; }
  std::vector<int64_t> TakePreemptions() override;
  absl::Status BeginStep(std::span<const AttentionStepSeq> seqs) override;
  absl::Status Attend(int32_t layer, const float* qkv, int64_t qkv_stride, float* out,
                      float* lse) override;

  // Segments of a sequence (tests).
  const std::vector<SegmentPlacement>* segments(int64_t seq_id) const;

 private:
  struct SeqState {
    std::vector<SegmentPlacement> segments;
    std::vector<AttentionLink*> links;  // per segment
    int64_t capacity = 0;  // tokens reserved over all segments
    int64_t length = 0;    // tokens grown to (what the scheduler asked for)
  };
  // Takes a directory answer as the sequence's placement.
  absl::Status SetSegments(SeqState& st, std::vector<SegmentPlacement> segs);
  int64_t RoundUp(int64_t tokens) const;
  int64_t Key(int64_t seq_id) const { return (key_prefix_ << kSeqKeyBits) | seq_id; }
  int64_t Priority(int64_t seq_id) const { return priority_ ? priority_(seq_id) : seq_id; }

  const AttentionShape shape_;
  SegmentDirectory* directory_;
  LinkResolver resolve_;
  const int64_t key_prefix_;
  std::unordered_map<int64_t, SeqState> seqs_;
  std::vector<AttentionStepSeq> step_;
  PriorityFn priority_;
};

// Data-plane links to attention shards of this process, by name (embedded mode, tests).
class InProcessLinks {
 public:
  // shards[i] is addressed as names[i].
  InProcessLinks(std::vector<std::string> names, std::vector<AttentionShard*> shards);
  ~InProcessLinks();
  LinkResolver Resolver();

 private:
  class Link;
  std::vector<std::string> names_;
  std::vector<std::unique_ptr<AttentionLink>> links_;
};

}  // namespace kvasir

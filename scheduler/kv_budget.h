// What the batch scheduler asks about KV memory. The scheduler never touches the cache itself:
// it asks how many blocks a sequence needs to grow, reserves them before a step and releases
// them when a sequence finishes, is preempted or aborted. The decoder engine answers through its
// attention executor (src/decoder/engine.cc), FakeKvBudget (fake_kv_budget.h) for tests.
//
// Token counts are relative to what the sequence holds after the previous step: Allocate(seq,
// n) makes room for n more tokens (a fresh sequence holds none). The real cache counts from
// the stored length, which the step's forward pass advances, so the scheduler allocates at
// most once per sequence per step and asks again only after the step.
#pragma once

#include <cstdint>

#include "common/status.h"

namespace kvasir::sched {

class KvBudget {
 public:
  virtual ~KvBudget() = default;

  // Blocks Allocate(seq_id, num_tokens) would take now (a sequence not held yet starts empty).
  virtual int64_t BlocksNeeded(int64_t seq_id, int32_t num_tokens) const = 0;
  // Blocks a sequence of `num_tokens` tokens holds once stored from empty.
  virtual int64_t BlocksForTokens(int64_t num_tokens) const = 0;
  virtual int64_t NumFreeBlocks() const = 0;
  virtual int64_t NumTotalBlocks() const = 0;

  // Makes room for `num_tokens` more tokens of seq_id, all or nothing; ResourceExhausted when
  // free blocks are short. It may fail even when BlocksNeeded <= NumFreeBlocks if the pool is
  // shared (attention workers serving several decoders): the scheduler then treats the request
  // as not fitting.
  virtual absl::Status Allocate(int64_t seq_id, int32_t num_tokens) = 0;
  // Returns every block of seq_id; unknown ids are ignored.
  virtual void Free(int64_t seq_id) = 0;
  // Prefix caching: for a request not held yet, takes the cached KV of the longest prefix of
  // its token stream that the pool holds and returns its length in tokens (stored already, so
  // the request's first step starts after them; always short of the whole stream). The blocks
  // are held as by Allocate; Free gives them back. 0: nothing cached (or no prefix cache).
  virtual int32_t AdoptCachedPrefix(int64_t seq_id) { return 0; }

  // True when the pool is shared with other decoders under a manager that decides who gets
  // blocks (the router's KV manager): the scheduler then asks (Allocate) even when
  // NumFreeBlocks looks short, because the manager makes room for old requests by preempting
  // younger ones elsewhere — but only for requests it has heard of.
  virtual bool shared() const { return false; }
};

}  // namespace kvasir::sched

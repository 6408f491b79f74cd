// Batched forward pass of a Llama-family model over a head-granular paged KV cache.
//
// One Forward() call advances many sequences, each by any number of tokens (prefill chunks and
// single decode tokens mixed), and returns logits only for the positions asked for. Attention
// over the history is computed as partial attention per token range returning (o, lse) and
// merged — the same math the attention workers serve (DESIGN.md).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "common/status.h"
#include "kvcache/kv_cache.h"
#include "attention/attention_executor.h"
#include "attention/local_attention.h"
#include "model/weights.h"
#include "runtime/backend.h"

namespace kvasir {

// Sampling a runner that can sample on its device does itself, for an entry whose caller needs
// only the token (no penalties, no top logprobs): Sampler's order, temperature -> top-k ->
// top-p -> min-p -> draw, with a counter-based RNG keyed by (seed, step), so a seeded request
// gets the same tokens whatever else shares its batches.
struct RunnerSampling {
  float temperature = 0.0f;  // below kGreedyTemperature: argmax
  int32_t top_k = 0;         // <= 0: off
  float top_p = 1.0f;
  float min_p = 0.0f;
  uint64_t seed = 0;
  uint64_t step = 0;         // tokens the sequence has sampled before
};

struct SequenceInput {
  int64_t seq_id = 0;            // must exist in the KV cache (KvCache::Create)
  std::vector<int32_t> tokens;   // [n] new tokens, n >= 1
  int32_t start_pos = 0;         // position of tokens[0]
  bool want_logits = true;       // false for non-final prefill chunks
  bool all_logits = false;       // logits for every token instead of only the last
  // With want_logits and not all_logits: a runner with samples_on_device() samples the token
  // itself (ForwardResult::sampled) and returns no logits row for the entry.
  std::optional<RunnerSampling> sampling = std::nullopt;
  // Head-aware KV eviction for the request (null: keep all; must outlive Forward) and its
  // prompt length (AttentionStepSeq::kv_policy).
  const KvPolicy* kv_policy = nullptr;
  int32_t prompt_len = 0;

  // The runner samples this entry's token (when it samples on its device at all).
  bool runner_samples() const { return want_logits && sampling && !all_logits; }
};

struct ForwardResult {
  std::vector<float> logits;       // [num_rows, vocab]
  std::vector<int32_t> first_row;  // [batch] first logits row of each entry (-1: none)
  std::vector<int32_t> num_rows;   // [batch]
  int32_t vocab_size = 0;
  // [batch] token the runner sampled for the entry (SequenceInput::sampling), -1 for none, and
  // its log-softmax under the raw logits. Empty when the runner sampled nothing.
  std::vector<int32_t> sampled;
  std::vector<float> sampled_logprob;
  const float* row(int32_t r) const { return logits.data() + static_cast<int64_t>(r) * vocab_size; }
};

// A KV cache of `num_blocks` blocks of `block_size` tokens shaped for the model (one page table
// per layer and KV head).
KvCacheConfig KvCacheConfigFor(const ModelConfig& c, int32_t block_size, int32_t num_blocks,
                               bool host_storage = true, KvDType dtype = KvDType::kF32);

// The checks every runner makes on a batch before touching any state: known sequences
// (`known`), non-empty inputs, token ids inside the vocabulary, positions inside the context,
// no sequence twice. InvalidArgument names the first problem.
absl::Status ValidateSequenceInputs(const ModelConfig& c, const std::vector<SequenceInput>& batch,
                                    const std::function<bool(int64_t seq_id)>& known);

// Sets out->first_row / num_rows / vocab_size for `batch` and returns the step rows (token
// index in the flattened batch) that get logits, in order. Shared by every runner.
std::vector<int32_t> SelectLogitRows(const std::vector<SequenceInput>& batch, int32_t vocab_size,
                                     ForwardResult* out);

// What the engine drives: one batched forward step, and where the KV of its sequences lives.
class StepRunner {
 public:
  virtual ~StepRunner() = default;
  virtual absl::StatusOr<ForwardResult> Forward(const std::vector<SequenceInput>& batch) = 0;
  virtual const ModelConfig& config() const = 0;
  // The scheduler grows and frees the sequences' KV here.
  virtual KvCapacity* kv() = 0;
  // True when Forward() honours SequenceInput::sampling.
  virtual bool samples_on_device() const { return false; }
};

// Runs the Llama forward (llama_forward.h) on the CPU backend; attention through an
// AttentionExecutor. Ignores
// SequenceInput::sampling (always returns logits).
class ModelRunner : public StepRunner {
 public:
  // Attention over a KV cache of this process.
  ModelRunner(const ModelWeights* weights, Backend* backend, KvCache* cache);
  // Attention wherever `attention` keeps the KV (e.g. attention workers); it must outlive this.
  ModelRunner(const ModelWeights* weights, Backend* backend, AttentionExecutor* attention);

  // Validates the whole batch before touching the cache: unknown sequences, empty inputs,
  // token ids outside the vocabulary and positions past the context are InvalidArgument; a
  // full cache is ResourceExhausted.
  absl::StatusOr<ForwardResult> Forward(const std::vector<SequenceInput>& batch) override;

  // Cuts each attention range into segments of at most `tokens` (0: one segment), computed
  // separately and merged; used to check that distributed attention is exact.
  // Only with the local attention.
  void set_attention_split(int32_t tokens) {
    if (local_) local_->set_split(tokens);
  }

  const ModelConfig& config() const override { return weights_->config; }
  KvCapacity* kv() override { return attention_; }
  AttentionExecutor* attention() { return attention_; }

 private:
  class CpuStep;  // the forward's ops for one step (model_runner.cc)

  const ModelWeights* weights_;
  Backend* backend_;
  std::unique_ptr<LocalAttention> local_;  // set by the KvCache constructor
  AttentionExecutor* attention_;
  std::vector<float> inv_freq_;  // [head_dim / 2]

  // Scratch, reused across calls.
  std::vector<float> x_, h_, qkv_, attn_, tmp_, gate_up_, act_;
};

}  // namespace kvasir

// Offline generation: submits every request to a decoder Engine (the same continuous-batching
// loop `kvasir serve` runs) and waits for all of them, turning tokens into text with stop
// strings applied on the calling thread. Behind `kvasir generate` and the engine tests.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "kvcache/kv_cache.h"
#include "decoder/engine.h"
#include "model/model_runner.h"
#include "model/sampling/sampler.h"
#include "model/sampling/sampling_params.h"
#include "model/tokenizer/tokenizer.h"

namespace kvasir {

struct GenerationRequest {
  std::vector<int32_t> prompt;  // token ids, BOS included when wanted
  SamplingParams params;
  std::optional<KvPolicy> kv_policy;  // head-aware KV eviction (EngineRequest::kv_policy)
};

struct GenerationResult {
  std::vector<int32_t> tokens;         // generated ids (a matched stop token is included)
  std::vector<SampleResult> samples;   // per generated token: logprob and top-n
  std::string text;                    // detokenized output, stop strings removed
  std::string finish_reason;           // "stop" or "length"
  int32_t prompt_tokens = 0;
  int64_t kv_tokens_kept = -1;         // EngineEvent::kv_tokens_kept
};

struct GeneratorOptions {
  int32_t max_batch_tokens = 512;  // tokens per forward step (prefill chunks + decodes)
  int32_t max_sequences = 256;     // sequences per step
};

// Called for every emitted text delta (stop strings already removed): request index, token id
// sampled in this step, text.
using StreamCallback = std::function<void(size_t index, int32_t token, std::string_view text)>;

class Generator {
 public:
  // tokenizer may be null: then no text is produced and stop strings are rejected.
  Generator(StepRunner* runner, const Tokenizer* tokenizer,
            GeneratorOptions options = {});

  absl::StatusOr<std::vector<GenerationResult>> Generate(
      const std::vector<GenerationRequest>& requests, const StreamCallback& on_text = nullptr);

  // The engine's counters at the end of the last Generate (steps, preemptions).
  const EngineStats& last_stats() const { return last_stats_; }

 private:
  StepRunner* runner_;

  const Tokenizer* tokenizer_;
  GeneratorOptions options_;
  EngineStats last_stats_;
};

}  // namespace kvasir

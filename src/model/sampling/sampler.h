// Per-sequence token sampler: penalties -> temperature -> top-k -> top-p -> min-p -> draw.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "model/sampling/sampling_params.h"

namespace kvasir {

struct TokenLogprob {
  int32_t token;
  float logprob;
};

struct SampleResult {
  int32_t token;
  // log-softmax of the chosen token under the *unmodified* logits (vLLM's default "raw
  // logprobs"): penalties, temperature and truncation do not change it.
  float logprob;
  std::vector<TokenLogprob> top;  // [min(params.logprobs, vocab)] by raw logprob, descending
};

// One per sequence. Holds the RNG and the penalty state (prompt tokens, counts of generated
// tokens); scratch buffers are per thread, so a Sampler itself stays small however large the
// vocabulary. Not thread-safe: one thread samples a given sequence at a time.
//
// Params must have passed ValidateSamplingParams. Reproducibility: for a given seed, the tokens
// depend only on the logits (the RNG is std::mt19937_64, whose output the standard fixes, and
// uniforms are built from its bits directly rather than through a library distribution).
class Sampler {
 public:
  Sampler(const SamplingParams& params, std::vector<int32_t> prompt_tokens);

  // logits: [vocab_size] fp32, not modified. NaN logits count as -inf, +inf as the largest
  // float. Records the sampled token into the generated history.
  SampleResult Sample(std::span<const float> logits);

  const SamplingParams& params() const { return params_; }
  // Continues a stream another sampler began (a migrated request): records `tokens` as
  // generated (penalties count them) and advances the RNG past their draws, so the next Sample
  // returns what that sampler's next one would have. Before any Sample.
  void Resume(const std::vector<int32_t>& tokens);
  // Tokens returned by Sample so far, in order.
  const std::vector<int32_t>& generated() const { return generated_; }

 private:
  // Applies repetition / frequency / presence penalties in place to `logits` ([vocab_size]).
  void ApplyPenalties(std::span<float> logits) const;
  bool HasPenalties() const;
  // Uniform double in [0, 1) from the top 53 bits of one RNG draw.
  double NextUniform();

  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<int32_t> prompt_unique_;                      // sorted, deduplicated prompt ids
  absl::flat_hash_map<int32_t, int32_t> generated_counts_;  // token -> times generated
  std::vector<int32_t> generated_;
};

}  // namespace kvasir

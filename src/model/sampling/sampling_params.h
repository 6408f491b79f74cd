// Per-request sampling parameters (OpenAI / vLLM names and semantics) and their validation.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace kvasir {

struct SamplingParams {
  float temperature = 1.0f;         // 0 => greedy (argmax, ties -> lowest id)
  int32_t top_k = 0;                // 0 or -1 => off; >= vocab_size is also off
  float top_p = 1.0f;               // (0, 1]
  float min_p = 0.0f;               // [0, 1]
  float repetition_penalty = 1.0f;  // > 0; HF/vLLM semantics over prompt + generated tokens:
                                    // logit > 0 ? logit / p : logit * p
  float presence_penalty = 0.0f;    // OpenAI semantics over generated tokens, [-2, 2]
  float frequency_penalty = 0.0f;   // OpenAI semantics over generated tokens, [-2, 2]
  std::optional<uint64_t> seed;     // same seed => same tokens
  int32_t max_tokens = 16;          // >= 1
  std::vector<int32_t> stop_token_ids;
  std::vector<std::string> stop;  // stop strings, non-empty each
  bool ignore_eos = false;
  int32_t logprobs = 0;  // top-n raw logprobs to return, 0..20
};

inline constexpr int32_t kMaxLogprobs = 20;

// Temperatures below this are treated as greedy (as vLLM does): dividing logits by a tiny
// temperature only amplifies rounding noise, and argmax is what the limit converges to.
inline constexpr float kGreedyTemperature = 1e-5f;

// Checks every field's range. NaN, infinities where a finite value is required, and values out
// of range give InvalidArgument with a message naming the field.
absl::Status ValidateSamplingParams(const SamplingParams& p, int32_t vocab_size);

}  // namespace kvasir

// Token counting for the load tester, behind an interface so the tool works with or without a
// Kvasir tokenizer: prompts of exact token lengths need a real tokenizer, while the fallback
// counts whitespace-separated words (approximate, and the report says so).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace kvasir::bench {

class TokenCounter {
 public:
  virtual ~TokenCounter() = default;

  // Number of tokens in `text`, without special tokens (as vLLM's add_special_tokens=False).
  virtual int Count(std::string_view text) const = 0;
  // True when counts are a real tokenizer's; false for the word-count fallback.
  virtual bool exact() const = 0;
  // Human-readable name for the report and JSON `tokenizer_id`.
  virtual std::string name() const = 0;

  // Token-level access, used to build random prompts of exact lengths. Only exact counters
  // implement them; vocab_size() == 0 means "not available".
  virtual int vocab_size() const { return 0; }
  virtual int num_special_tokens_to_add() const { return 0; }
  virtual absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text) const {
    return absl::UnimplementedError("Encode needs a tokenizer");
  }
  virtual std::string Decode(const std::vector<int32_t>& ids) const { return ""; }
};

// Fallback: one token per whitespace-separated word.
std::unique_ptr<TokenCounter> MakeWordCounter();

// Loads a Kvasir tokenizer from a model directory or a tokenizer file (tokenizer.json,
// tokenizer.bin). Unimplemented when kvasir-bench was built without the tokenizer library.
absl::StatusOr<std::unique_ptr<TokenCounter>> LoadTokenCounter(const std::string& path);

// Word list the fallback uses to build text prompts; stable across runs.
const std::vector<std::string>& FallbackWords();

}  // namespace kvasir::bench

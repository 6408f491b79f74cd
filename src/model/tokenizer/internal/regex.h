// PCRE2 (UTF + UCP, JIT when available) for the pre-tokenizer split patterns.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace kvasir::tokenizer_internal {

class Regex {
 public:
  // Compiles `pattern` with PCRE2_UTF | PCRE2_UCP (so \s, \w, \d and case folding are Unicode
  // aware, as in HF tokenizers' Oniguruma patterns) and JIT-compiles it when possible.
  static absl::StatusOr<std::unique_ptr<Regex>> Compile(const std::string& pattern);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // All non-overlapping matches as [begin, end) byte offsets, left to right. An empty match
  // advances by one character. `text` must be valid UTF-8 (not re-checked). Thread-safe.
  absl::StatusOr<std::vector<std::pair<size_t, size_t>>> FindAll(std::string_view text) const;

  const std::string& pattern() const { return pattern_; }

 private:
  Regex() = default;
  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code_8*
  bool jit_ = false;
};

}  // namespace kvasir::tokenizer_internal

// Streaming stop-string detection over decoded text pieces that may split a stop string (or a
// UTF-8 character) anywhere.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace kvasir {

// Feed the decoded text of each new token to Push. It returns the text that is safe to emit
// now and holds back the longest suffix that could still grow into a stop string, as well as an
// incomplete trailing UTF-8 sequence, so emitted text is never retracted and never splits a
// character. When a stop string completes, the text before it is emitted and the stop string
// itself is not (OpenAI semantics); if several complete in the same Push, the one that starts
// earliest wins. A stop string is reported as soon as it completes, even if a longer one that
// started earlier might still have completed later (as vLLM does).
class StopStringMatcher {
 public:
  // Empty strings are ignored (ValidateSamplingParams rejects them).
  explicit StopStringMatcher(std::vector<std::string> stops);

  struct Result {
    std::string emit;
    bool stopped;
  };
  // After a stop, every further Push returns {"", true}.
  Result Push(std::string_view piece);
  // At the end of generation: the held-back text (empty after a stop).
  std::string Flush();

  bool stopped() const { return stopped_; }

 private:
  // Length of the longest suffix of pending_ that is a proper prefix of some stop string.
  size_t HeldSuffixLength() const;

  std::vector<std::string> stops_;
  std::string pending_;  // pushed but not yet emitted; shorter than the longest stop + 3 bytes
  bool stopped_ = false;
};

}  // namespace kvasir

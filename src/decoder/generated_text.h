// Generated tokens -> the text a client sees, shared by the router's completion streams and the
// in-process Generator: incremental UTF-8-safe detokenization (IncrementalDecoder) followed by
// stop strings (StopStringMatcher, OpenAI semantics: the stop string and everything after it are
// not shown). A token that ends the request by EOS or a stop id is never pushed (it is
// generated but not shown).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/sampling/stop_string_matcher.h"
#include "model/tokenizer/tokenizer.h"

namespace kvasir {

class GeneratedText {
 public:
  // The tokenizer must outlive this. `prompt`: the ids the text continues, so that
  // prompt text + this text == the decoded whole (the first token keeps its leading space).
  GeneratedText(const Tokenizer& tokenizer, std::vector<std::string> stop,
                const std::vector<int32_t>& prompt = {});

  struct Step {
    std::string text;      // safe to show now
    bool stopped = false;  // a stop string matched: the request ends here
  };
  // One generated token. After a stop, returns {"", true}.
  Step Push(int32_t token);
  // The end of the request when no stop string matched: the text held back (an incomplete
  // UTF-8 character, a possible stop-string prefix). Returns "" after a stop.
  std::string Finish();
  bool stopped() const { return stops_.stopped(); }

 private:
  IncrementalDecoder decoder_;
  StopStringMatcher stops_;
};

}  // namespace kvasir

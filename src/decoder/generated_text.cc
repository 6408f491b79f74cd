#include "decoder/generated_text.h"

#include <utility>

namespace kvasir {

GeneratedText::GeneratedText(const Tokenizer& tokenizer, std::vector<std::string> stop,
                             const std::vector<int32_t>& prompt)
    : decoder_(tokenizer), stops_(std::move(stop)) {
  decoder_.Continue(prompt);
}

GeneratedText::Step GeneratedText::Push(int32_t token) {
  auto r = stops_.Push(decoder_.Push(token));
  return {std::move(r.emit), r.stopped};
}

std::string GeneratedText::Finish() {
  if (stops_.stopped()) return "";
  auto r = stops_.Push(decoder_.Flush());
  std::string text = std::move(r.emit);
  if (!r.stopped) text += stops_.Flush();
  return text;
}

}  // namespace kvasir

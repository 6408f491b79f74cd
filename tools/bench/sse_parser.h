// Incremental parser for Server-Sent Events as OpenAI-compatible servers stream them:
// events separated by a blank line, payload in `data:` lines, `:` lines are comments (pings).
// Bytes arrive in arbitrary pieces; events are returned as soon as they are complete.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace kvasir::bench {

class SseParser {
 public:
  // Appends bytes and returns the data payloads of the events completed by them (the `data:`
  // lines of one event joined by '\n'; events without data, e.g. comments, are skipped).
  std::vector<std::string> Feed(std::string_view bytes);

  // End of stream: returns the payload of a last event not followed by a blank line, if any.
  std::vector<std::string> Finish();

  // Bytes received but not yet part of a complete event.
  size_t buffered() const { return buffer_.size(); }

 private:
  void ParseEvent(std::string_view event, std::vector<std::string>* out) const;

  std::string buffer_;
};

}  // namespace kvasir::bench

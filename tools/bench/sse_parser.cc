#include "tools/bench/sse_parser.h"

namespace kvasir::bench {
namespace {

// Finds the end of the first event in `s`: a blank line ("\n\n", "\r\n\r\n", "\r\r" ...).
// Returns {event_end, separator_end} or {npos, npos}.
std::pair<size_t, size_t> FindEventEnd(std::string_view s, size_t from) {
  for (size_t i = from; i < s.size(); ++i) {
    const char c = s[i];
    if (c != '\n' && c != '\r') continue;
    // End of a line at i; the line break is "\r\n", "\n" or "\r".
    size_t j = i + 1;
    if (c == '\r' && j < s.size() && s[j] == '\n') ++j;
    if (c == '\r' && j == s.size()) return {std::string_view::npos, std::string_view::npos};
    // A second line break right after makes a blank line.
    if (j < s.size() && (s[j] == '\n' || s[j] == '\r')) {
      size_t k = j + 1;
      if (s[j] == '\r') {
        if (k == s.size()) return {std::string_view::npos, std::string_view::npos};
        if (s[k] == '\n') ++k;
      }
      return {i, k};
    }
    i = j - 1;
  }
  return {std::string_view::npos, std::string_view::npos};
}

}  // namespace

std::vector<std::string> SseParser::Feed(std::string_view bytes) {
  buffer_.append(bytes.data(), bytes.size());
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    auto [end, next] = FindEventEnd(buffer_, start);
    if (end == std::string_view::npos) break;
    ParseEvent(std::string_view(buffer_).substr(start, end - start), &out);
    start = next;
  }
  buffer_.erase(0, start);
  return out;
}

std::vector<std::string> SseParser::Finish() {
  std::vector<std::string> out;
  ParseEvent(buffer_, &out);
  buffer_.clear();
  return out;
}

void SseParser::ParseEvent(std::string_view event, std::vector<std::string>* out) const {
  std::string data;
  bool has_data = false;
  size_t pos = 0;
  while (pos < event.size()) {
    size_t eol = event.find_first_of("\r\n", pos);
    if (eol == std::string_view::npos) eol = event.size();
    std::string_view line = event.substr(pos, eol - pos);
    pos = eol + 1;
    if (eol < event.size() && event[eol] == '\r' && pos < event.size() && event[pos] == '\n') ++pos;
    if (line.empty() || line.front() == ':') continue;  // comment / keep-alive ping
    const size_t colon = line.find(':');
    std::string_view field = line.substr(0, colon);
    std::string_view value =
        colon == std::string_view::npos ? std::string_view() : line.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    if (field != "data") continue;  // event:, id:, retry: carry nothing the benchmark needs
    if (has_data) data.push_back('\n');
    data.append(value.data(), value.size());
    has_data = true;
  }
  if (has_data) out->push_back(std::move(data));
}

}  // namespace kvasir::bench

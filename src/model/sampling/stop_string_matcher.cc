#include "model/sampling/stop_string_matcher.h"

#include <algorithm>
#include <utility>

namespace kvasir {
namespace {

// Length of the incomplete UTF-8 sequence at the end of `text` (0 if it ends on a character
// boundary). Bytes that are not valid UTF-8 are not held: they would otherwise never complete.
size_t IncompleteUtf8Tail(std::string_view text) {
  const size_t n = text.size();
  for (size_t back = 1; back <= std::min<size_t>(n, 4); ++back) {
    const auto c = static_cast<unsigned char>(text[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead byte
    size_t len = 0;
    if ((c & 0xE0) == 0xC0) {
      len = 2;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
    } else {
      return 0;  // ASCII or an invalid lead byte
    }
    return back < len ? back : 0;
  }
  return 0;
}

}  // namespace

StopStringMatcher::StopStringMatcher(std::vector<std::string> stops) {
  for (std::string& s : stops) {
    if (!s.empty()) stops_.push_back(std::move(s));
  }
}

size_t StopStringMatcher::HeldSuffixLength() const {
  const std::string_view text = pending_;
  size_t held = 0;
  for (const std::string& stop : stops_) {
    for (size_t k = std::min(stop.size() - 1, text.size()); k > held; --k) {
      if (text.substr(text.size() - k) == std::string_view(stop).substr(0, k)) {
        held = k;
        break;
      }
    }
  }
  return held;
}

StopStringMatcher::Result StopStringMatcher::Push(std::string_view piece) {
  if (stopped_) return {"", true};
  pending_.append(piece);

  // Any match starts inside pending_: emitted text never ends with a prefix of a stop string.
  size_t first = std::string::npos;
  for (const std::string& stop : stops_) first = std::min(first, pending_.find(stop));
  if (first != std::string::npos) {
    stopped_ = true;
    std::string emit = pending_.substr(0, first);
    pending_.clear();
    return {std::move(emit), true};
  }

  const std::string_view text = pending_;
  const size_t held = HeldSuffixLength();
  size_t cut = text.size() - held;
  cut -= IncompleteUtf8Tail(text.substr(0, cut));
  std::string emit = pending_.substr(0, cut);
  pending_.erase(0, cut);
  return {std::move(emit), false};
}

std::string StopStringMatcher::Flush() {
  std::string out = std::move(pending_);
  pending_.clear();
  return out;
}

}  // namespace kvasir

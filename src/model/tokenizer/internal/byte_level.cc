#include "model/tokenizer/internal/byte_level.h"

#include "model/tokenizer/internal/utf8.h"

namespace kvasir::tokenizer_internal {
namespace {

bool IsPrintable(int b) { return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174; }

}  // namespace

const std::array<uint32_t, 256>& ByteToUnicode() {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) t[b] = IsPrintable(b) ? b : next++;
    return t;
  }();
  return table;
}

bool ByteLevelToBytes(std::string_view piece, std::string* bytes) {
  // Inverse table over U+0000..U+0143 (the largest mapped codepoint is 256 + 67).
  static const std::array<int16_t, 324> inverse = [] {
    std::array<int16_t, 324> inv;
    inv.fill(-1);
    for (int b = 0; b < 256; ++b) inv[ByteToUnicode()[b]] = static_cast<int16_t>(b);
    return inv;
  }();
  bytes->clear();
  size_t pos = 0;
  while (pos < piece.size()) {
    const Utf8Step step = NextUtf8(piece, pos);
    if (step.kind != Utf8Step::kChar || step.codepoint >= inverse.size() ||
        inverse[step.codepoint] < 0) {
      return false;
    }
    bytes->push_back(static_cast<char>(inverse[step.codepoint]));
    pos += step.length;
  }
  return true;
}

std::string BytesToByteLevel(std::string_view bytes) {
  std::string out;
  for (const char c : bytes) AppendUtf8(ByteToUnicode()[static_cast<uint8_t>(c)], &out);
  return out;
}

}  // namespace kvasir::tokenizer_internal
